"""`vnetctl fabric status`: the fabric's nodes, pools and pods, as data and as rich tables."""

from __future__ import annotations

from rich.markup import escape

from . import enforcement, inventory, kernel, model, pods
from .errors import SimError
from .pods import PodRecord


def pod_row(p: PodRecord) -> dict:
    return {"pod": f"{p.namespace}/{p.name}", "node": p.node, "address": p.address,
            **({"address6": p.address6} if p.address6 else {}), "mac": p.mac,
            "hostInterface": p.host_ifname, "containerId": p.containerId[:12], "netns": p.netns}


def _range(addresses: list[str]) -> str:
    """'10.240.0.5-34' style: the first address and the last one's final octet (blocks are consecutive)."""
    if not addresses:
        return "-"
    if len(addresses) == 1:
        return addresses[0]
    return f"{addresses[0]}-{addresses[-1].rsplit('.', 1)[-1]}" if addresses[0].rsplit(".", 1)[0] == \
        addresses[-1].rsplit(".", 1)[0] else f"{addresses[0]}-{addresses[-1]}"


def status(name: str) -> dict:
    from . import health

    rec = model.load(name)
    listed = pods.list_pods(rec)
    usage = pods.node_usage(rec, listed)
    fabric_problems, checks = health.fabric_health(rec)
    nodes = []
    for n, h in zip(rec.nodes, checks):
        try:
            pool = inventory.pool_counts(n)
        except Exception as exc:  # a corrupt state file is something to show, not to crash on
            pool = {"error": str(exc)}
        nodes.append({
            "name": n.name, "netns": n.netns, "primary": n.primary, "mac": n.mac,
            "secondaries": _range(n.secondaries), "capacity": len(n.secondaries), "pods": usage.get(n.name, 0),
            "pool": pool, "healthy": h.ok, "problems": h.problems,
            "metadata": h.metadata.detail, "vnetd": h.vnetd.detail if h.vnetd else "not run on this fabric",
            "vnetdListening": h.vnetd.ok if h.vnetd else None,
            "metadataPid": n.metadataPid, "vnetdPid": n.vnetdPid,
            "metrics": f"http://{n.primary}:{rec.metricsPort}/metrics" if rec.metricsPort else None,
            "metadataUrl": n.metadataUrl, "conflist": n.conflist, "stateDir": n.stateDir,
        })
    try:
        counters = enforcement.counters(rec) if kernel.netns_exists(rec.fabricNetns) else {}
    except SimError:
        counters = {}
    healthy = not fabric_problems and all(h.ok for h in checks)
    return {
        "name": rec.name, "subnet": rec.subnet, "gateway": rec.gateway, "fabricNetns": rec.fabricNetns,
        "enforceSource": rec.enforceSource, "vnetd": rec.vnetd, "metricsPort": rec.metricsPort,
        "healthy": healthy, "problems": fabric_problems + [f"{n['name']}: {p}" for n in nodes for p in n["problems"]],
        "directory": rec.directory, "nodes": nodes, "pods": [pod_row(p) for p in listed], "counters": counters,
    }


def pods_table(rows: list[dict], title: str = "pods"):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("pod", "node", "address", "MAC", "host interface"):
        table.add_column(col)
    for r in rows:
        address = r["address"] + (f"\n{r['address6']}" if r.get("address6") else "")
        table.add_row(r["pod"], r["node"], address, r["mac"], r["hostInterface"])
    return table


def _pool_text(pool: dict) -> str:
    if "error" in pool:
        return f"error: {pool['error']}"
    if pool.get("size"):
        return f"{pool['in use']}/{pool['free']}" + (f" +{pool['cooling']} cooling" if pool["cooling"] else "")
    return "not learned"


def print_status(console, data: dict, wide: bool = False) -> None:
    """The fabric, why it is degraded (if it is), its nodes and its pods; tables via the CLI's
    table() (the terminal's width, plain full-width columns in a pipe)."""
    from ..cli.common import table

    name = escape(data["name"])
    if data["healthy"]:
        health = "[green]up[/]"
    else:
        health = "[red]DEGRADED[/]"
    console.print(f"fabric [bold]{name}[/] {health}: subnet {data['subnet']}, gateway {data['gateway']} "
                  f"in {data['fabricNetns']}" + (", source addresses enforced" if data["enforceSource"] else ""))
    for problem in data["problems"]:
        console.print(f"[red]  {escape(problem)}[/]")
    if not data["healthy"]:
        console.print(f"`vnetctl fabric repair --fabric {name}` restarts what is down and keeps the pods")
    cols = ["node", "eth0", "pods", "pool used/free", "fabric in/out", "vnetd"]
    if wide:
        cols += ["MAC", "secondaries", "spoofed", "metadata", "netns", "state dir"]
    rows = []
    for n in data["nodes"]:
        c = data["counters"].get(n["name"], {})
        vnetd = {None: "-", True: "listening", False: "DOWN"}[n["vnetdListening"]]
        row = [n["name"], n["primary"], f"{n['pods']}/{n['capacity']}", _pool_text(n["pool"]),
               f"{c.get('ipv4_from', '-')}/{c.get('ipv4_to', '-')}", vnetd]
        if wide:
            row += [n["mac"], n["secondaries"], str(c.get("spoofed_from", "-")), n["metadata"], n["netns"],
                    n["stateDir"]]
        rows.append(row)
    table("nodes", cols, rows, ["" if n["healthy"] else "red" for n in data["nodes"]])
    console.print("fabric in/out: unicast IPv4 packets between the node and the fabric"
                  + ("" if wide else "; -o wide: MACs, secondaries, spoofed, metadata, paths"))
    if data.get("metricsPort"):
        console.print(f"vnetd metrics on every node: http://<node eth0>:{data['metricsPort']}/metrics "
                      f"(e.g. ip netns exec {data['nodes'][0]['netns']} curl -s "
                      f"127.0.0.1:{data['metricsPort']}/metrics)")
    if data["pods"]:
        pods_rows(data["pods"], wide)
    else:
        console.print("no pods")


def pods_rows(rows: list[dict], wide: bool = False) -> None:
    from ..cli.common import table

    cols = ["pod", "node", "address", "MAC", "host interface"] + (["container", "netns"] if wide else [])
    table("pods", cols, [[r["pod"], r["node"], r["address"], r["mac"], r["hostInterface"]] +
                         ([r["containerId"], r["netns"]] if wide else []) for r in rows])
