"""`vnetctl fabric status`: the fabric's nodes, pools and pods, as data and as rich tables."""

from __future__ import annotations

from rich.markup import escape

from . import enforcement, fabric, inventory, kernel, model, pods, processes
from .errors import SimError
from .pods import PodRecord


def pod_row(p: PodRecord) -> dict:
    return {"pod": f"{p.namespace}/{p.name}", "node": p.node, "address": p.address, "mac": p.mac,
            "hostInterface": p.host_ifname, "containerId": p.containerId[:12], "netns": p.netns}


def _range(addresses: list[str]) -> str:
    """'10.240.0.5-34' style: the first address and the last one's final octet (blocks are consecutive)."""
    if not addresses:
        return "-"
    if len(addresses) == 1:
        return addresses[0]
    return f"{addresses[0]}-{addresses[-1].rsplit('.', 1)[-1]}" if addresses[0].rsplit(".", 1)[0] == \
        addresses[-1].rsplit(".", 1)[0] else f"{addresses[0]}-{addresses[-1]}"


def _daemon(pid: int | None, netns: str) -> str:
    if not pid:
        return "-"
    return f"running (pid {pid})" if processes.in_netns(pid, netns) else f"DOWN (pid {pid})"


def status(name: str) -> dict:
    rec = model.load(name)
    listed = pods.list_pods(rec)
    usage = pods.node_usage(rec, listed)
    nodes = []
    for n in rec.nodes:
        try:
            pool = inventory.pool_counts(n)
        except Exception as exc:  # a corrupt state file is something to show, not to crash on
            pool = {"error": str(exc)}
        nodes.append({
            "name": n.name, "netns": n.netns, "primary": n.primary, "mac": n.mac,
            "secondaries": _range(n.secondaries), "capacity": len(n.secondaries), "pods": usage.get(n.name, 0),
            "pool": pool, "metadata": _daemon(n.metadataPid, n.netns), "vnetd": _daemon(n.vnetdPid, n.netns),
            "metadataUrl": n.metadataUrl, "conflist": n.conflist, "stateDir": n.stateDir,
        })
    try:
        counters = enforcement.counters(rec) if kernel.netns_exists(rec.fabricNetns) else {}
    except SimError:
        counters = {}
    return {
        "name": rec.name, "subnet": rec.subnet, "gateway": rec.gateway, "fabricNetns": rec.fabricNetns,
        "enforceSource": rec.enforceSource, "healthy": fabric.record_is_healthy(rec), "directory": rec.directory,
        "nodes": nodes, "pods": [pod_row(p) for p in listed], "counters": counters,
    }


def pods_table(rows: list[dict], title: str = "pods"):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("pod", "node", "address", "MAC", "host interface"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["pod"], r["node"], r["address"], r["mac"], r["hostInterface"])
    return table


def nodes_table(nodes: list[dict], counters: dict):
    from rich.table import Table

    table = Table(title="nodes", title_justify="left")
    for col in ("node", "eth0", "MAC", "secondaries", "pods", "pool used/free", "fabric in/out", "spoofed"):
        table.add_column(col)
    for n in nodes:
        pool = n["pool"]
        if "error" in pool:
            pool_text = f"[red]{escape(pool['error'][:40])}[/]"
        elif pool.get("size"):
            pool_text = f"{pool['in use']}/{pool['free']}" + (f" +{pool['cooling']} cooling" if pool["cooling"] else "")
        else:
            pool_text = "not learned"
        c = counters.get(n["name"], {})
        table.add_row(n["name"], n["primary"], n["mac"], n["secondaries"], f"{n['pods']}/{n['capacity']}",
                      pool_text, f"{c.get('ipv4_from', '-')}/{c.get('ipv4_to', '-')}", str(c.get("spoofed_from", "-")))
    return table


def print_status(console, data: dict) -> None:
    health = "[green]up[/]" if data["healthy"] else "[red]DEGRADED (run `vnetctl fabric up` to rebuild)[/]"
    console.print(f"fabric [bold]{data['name']}[/] {health}: subnet {data['subnet']}, gateway {data['gateway']} "
                  f"in {data['fabricNetns']}" + (", source addresses enforced" if data["enforceSource"] else ""))
    down = [n["name"] for n in data["nodes"] if not n["metadata"].startswith("running")]
    if down:
        console.print(f"[red]metadata service down on {', '.join(down)}[/]")
    console.print(nodes_table(data["nodes"], data["counters"]))
    console.print("fabric in/out: unicast IPv4 packets between the node and the fabric")
    if data["pods"]:
        console.print(pods_table(data["pods"]))
    else:
        console.print("no pods")
