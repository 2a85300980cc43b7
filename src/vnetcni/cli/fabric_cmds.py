"""vnetctl fabric up|down|status|repair|list|capacity, vnetctl pod add|del|list and vnetctl demo:
the simulated VNet. The fabric is `--fabric NAME` everywhere (`--name` is its old spelling), the
node `--node NODE`; progress goes to stderr, data to stdout (`-o json` for machines)."""

from __future__ import annotations

import os
from typing import List, Optional

import typer

from ..sim import naming
from .common import (EXIT_PERMISSION, JSON_OPTION, BadArgument, NotFound, Output, console, emit_json, error,
                     guarded, output_option, say, want_json)

fabric_app = typer.Typer(help="The simulated VNet: a fabric namespace, node namespaces, metadata services.",
                         no_args_is_help=True)
pod_app = typer.Typer(help="Pods on a simulated node, created through the node's CNI chain as a runtime does.",
                      no_args_is_help=True)


def fabric_option() -> str:
    return typer.Option(naming.DEFAULT_FABRIC, "--fabric", "--name", help="The fabric's name.")


DEFAULT_SUBNET6 = "fd00:10:240::/64"  # a unique local range: never routed beyond the fabric


def register(app: typer.Typer) -> None:
    from . import service_cmds

    service_cmds.register(fabric_app)
    app.add_typer(fabric_app, name="fabric")
    app.add_typer(pod_app, name="pod")
    app.command("demo")(demo)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        error(f"`vnetctl {what}` needs root: the simulated VNet is network namespaces, and its state is in "
              f"{naming.root_dir()}", f"run it as root (sudo vnetctl {what} …)", EXIT_PERMISSION)


def _progress_console():
    return console(stderr=True, pipe_width=120)  # log lines are padded to the width


# --- fabric ---------------------------------------------------------------------------------
@fabric_app.command("up")
def fabric_up(
    nodes: int = typer.Option(3, "--nodes", help="How many nodes (VMs) the VNet has."),
    ips_per_node: int = typer.Option(30, "--ips-per-node", help="Secondary addresses per node's NIC."),
    subnet: str = typer.Option("10.240.0.0/16", "--subnet", help="The VNet subnet."),
    fabric: str = fabric_option(),
    enforce_source: bool = typer.Option(False, "--enforce-source",
                                        help="Drop (and count) traffic a node sends from addresses it does not own."),
    vnetd: bool = typer.Option(True, "--vnetd/--no-vnetd",
                               help="Run vnetd on every node as the DaemonSet does (skipped if not installed), "
                               "or the plugins in-process."),
    metrics: bool = typer.Option(False, "--metrics", help="vnetd serves Prometheus metrics on every node's "
                                 "eth0, port 9401."),
    reuse_cooldown: Optional[float] = typer.Option(None, "--reuse-cooldown",
                                                   help="vnet-ipam reuseCooldownSeconds in the nodes' conflists "
                                                   "(default: vnet-ipam's, 30 s)."),
    mode: str = typer.Option("bridge", "--mode",
                             help="The vnet plugin's mode on every node: bridge, or transparent (routed; "
                                  "the fabric then delivers each secondary address to its node, as the SDN does)."),
    dual_stack: bool = typer.Option(False, "--dual-stack", help="Give the VNet an IPv6 subnet too (--subnet6)."),
    subnet6: str = typer.Option(DEFAULT_SUBNET6, "--subnet6", help="The VNet's IPv6 subnet, with --dual-stack."),
    replace: bool = typer.Option(False, "--replace", help="Rebuild a fabric of this name that is up, "
                                 "deleting its pods."),
    output: Optional[Output] = output_option("the new fabric"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Bring a simulated VNet up. A fabric of that name that is up is refused (see `fabric repair`,
    or --replace); leftovers of a crashed run are removed first."""
    from ..sim import fabric as sim_fabric

    _need_root("fabric up")

    def body() -> int:
        log = _progress_console()
        opts = sim_fabric.FabricOptions(name=fabric, nodes=nodes, ips_per_node=ips_per_node, subnet=subnet,
                                        enforce_source=enforce_source, vnetd=vnetd, reuse_cooldown=reuse_cooldown,
                                        metrics=metrics, replace=replace, mode=mode,
                                        subnet6=subnet6 if dual_stack else "")
        with log.status("bringing the fabric up") as status:
            rec = sim_fabric.up(opts, progress=lambda m: (log.log(m), status.update(m)))
        if want_json(output, as_json):
            emit_json({"name": rec.name, "subnet": rec.subnet, "gateway": rec.gateway, "directory": rec.directory,
                       "mode": rec.mode, "subnet6": rec.subnet6, "gateway6": rec.gateway6, "vnetd": rec.vnetd, "metrics_port": rec.metricsPort,
                       "nodes": [{"name": n.name, "netns": n.netns, "primary": n.primary, "mac": n.mac,
                                  "secondaries": len(n.secondaries), "conflist": n.conflist,
                                  "state_dir": n.stateDir} for n in rec.nodes]})
            return 0
        out = console()
        out.print(f"fabric [bold]{rec.name}[/] is up ({rec.mode} mode): {len(rec.nodes)} nodes on {rec.subnet}"
                  f"{' and ' + rec.subnet6 if rec.subnet6 else ''}, "
                  f"gateway {rec.gateway}; {'vnetd on every node' if rec.vnetd else 'plugins in-process'}; "
                  f"state in {rec.directory}")
        out.print(f"try: vnetctl pod add web --node {rec.nodes[0].name} --fabric {rec.name}")
        out.print(f"     ip netns exec {rec.nodes[0].netns} vnetctl status")
        return 0

    guarded(body)


@fabric_app.command("down")
def fabric_down(fabric: str = fabric_option(),
                output: Optional[Output] = output_option("what was removed"),
                as_json: bool = JSON_OPTION) -> None:
    """Remove the fabric: daemons, pod, node and fabric namespaces, its state directory."""
    from ..sim import fabric as sim_fabric

    _need_root("fabric down")

    def body() -> int:
        log = _progress_console()
        removed = sim_fabric.down(fabric, progress=lambda m: log.log(m))
        if want_json(output, as_json):
            emit_json({"name": fabric, "was_up": bool(removed["namespaces"] or removed["stateDir"]), **removed})
        elif not removed["namespaces"] and not removed["stateDir"]:
            typer.echo(f"fabric {fabric!r} was not up; nothing to remove")
        else:
            typer.echo(f"fabric {fabric!r} removed: {removed['namespaces']} namespaces, "
                       f"{removed['processes']} processes")
        return 0

    guarded(body)


@fabric_app.command("status")
def fabric_status(fabric: str = fabric_option(),
                  output: Optional[Output] = output_option("the status"),
                  as_json: bool = JSON_OPTION) -> None:
    """Nodes, their addresses and pools, the pods on them, and why the fabric is degraded if it is
    (each node's metadata service and vnetd are asked, not their recorded pids)."""
    from ..sim import report

    _need_root("fabric status")  # its health checks ask each node's daemons from inside the node

    def body() -> int:
        data = report.status(fabric)
        if want_json(output, as_json):
            emit_json(data)
        else:
            report.print_status(console(), data, wide=output == Output.wide)
        return 0

    guarded(body)


@fabric_app.command("repair")
def fabric_repair(fabric: str = fabric_option(),
                  output: Optional[Output] = output_option("what was restarted"),
                  as_json: bool = JSON_OPTION) -> None:
    """Restart what is down on a fabric (metadata services, vnetd) without touching its pods."""
    from ..sim import fabric as sim_fabric

    _need_root("fabric repair")

    def body() -> int:
        log = _progress_console()
        done = sim_fabric.repair(fabric, progress=lambda m: log.log(m))
        if want_json(output, as_json):
            emit_json({"name": fabric, **done})
        else:
            for line in done["restarted"]:
                typer.echo(f"restarted {line}")
            if not done["restarted"] and not done["unrepairable"]:
                typer.echo(f"fabric {fabric!r}: nothing is down")
        if done["unrepairable"]:
            error(f"fabric {fabric!r} cannot be repaired in place: {'; '.join(done['unrepairable'])}",
                  f"`vnetctl fabric up --fabric {fabric} --replace` rebuilds it (its pods are deleted)")
        return 0

    guarded(body)


@fabric_app.command("list")
def fabric_list(output: Optional[Output] = output_option("the fabrics"), as_json: bool = JSON_OPTION) -> None:
    """The simulated VNets on this machine."""
    from ..sim import health, model, pods
    from .common import table

    _need_root("fabric list")  # its health checks ask each node's daemons from inside the node

    def body() -> int:
        rows = []
        for name in model.list_fabrics():
            try:
                rec = model.load(name)
            except LookupError as exc:
                rows.append({"name": name, "status": f"unreadable: {exc}"})
                continue
            whole = health.is_whole(rec)
            rows.append({"name": rec.name, "status": "up" if whole else "degraded", "nodes": len(rec.nodes),
                         "pods": len(pods.list_pods(rec)), "subnet": rec.subnet, "vnetd": rec.vnetd,
                         "created": rec.created, "directory": rec.directory})
        if want_json(output, as_json):
            emit_json(rows)
            return 0
        cols = ["fabric", "status", "nodes", "pods", "subnet", "vnetd", "created"]
        table("fabrics", cols, [[r["name"], r["status"], r.get("nodes"), r.get("pods"), r.get("subnet"),
                                 {True: "on", False: "off"}.get(r.get("vnetd")), r.get("created")] for r in rows])
        if not rows:
            say(f"no simulated VNet under {naming.root_dir()}; `vnetctl fabric up` starts one")
        return 0

    guarded(body)


@fabric_app.command("capacity")
def fabric_capacity(fabric: str = fabric_option(),
                    output: Optional[Output] = output_option("the capacities"),
                    as_json: bool = JSON_OPTION) -> None:
    """max-pods each node should advertise, from the node's own metadata service."""
    from ..sim import inventory, model

    def body() -> int:
        caps = inventory.fabric_capacity(model.load(fabric))
        if want_json(output, as_json):
            emit_json([c.to_dict() for c in caps])
            return 0
        for c in caps:
            typer.echo(f"{c.node}: max-pods {c.max_pods} ({c.secondary_addresses} secondary addresses; "
                       f"primary {c.primary}, MAC {c.mac})")
        return 0

    guarded(body)


# --- pods -----------------------------------------------------------------------------------
def _pod_args(args: List[str], node: Optional[str], command: str) -> tuple[Optional[str], str]:
    """NAME (with --node), or the older NODE NAME."""
    if len(args) == 1:
        return node, args[0]
    if len(args) == 2:
        if node and node != args[0]:
            raise BadArgument(f"node given twice: {args[0]!r} and --node {node}")
        return args[0], args[1]
    raise BadArgument(f"`vnetctl pod {command}` takes one pod name, got {len(args)} arguments",
                      f"vnetctl pod {command} NAME --node NODE")


def _pod_json(namespace: str, rec) -> dict:
    return {"pod": f"{namespace}/{rec.name}", "node": rec.node, "address": rec.address, "mac": rec.mac,
            "host_interface": rec.host_ifname, "container_id": rec.containerId, "netns": rec.netns}


@pod_app.command("add")
def pod_add(args: List[str] = typer.Argument(..., metavar="NAME", help="Pod name (`NODE NAME` also works)."),
            node: Optional[str] = typer.Option(None, "--node", help="Node to run it on (default: the node "
                                               "with the fewest pods)."),
            namespace: str = typer.Option("default", "--namespace", "-n", help="Kubernetes namespace."),
            fabric: str = fabric_option(),
            output: Optional[Output] = output_option("the pod"),
            as_json: bool = JSON_OPTION) -> None:
    """Create a pod sandbox on a node and run the node's CNI chain (ADD) for it."""
    from ..sim import model, pods

    def body() -> int:
        node_name, name = _pod_args(args, node, "add")
        rec = model.load(fabric)
        if node_name is None:
            usage = pods.node_usage(rec)
            node_name = min(rec.nodes, key=lambda n: (usage.get(n.name, 0), n.name)).name
            say(f"scheduling {namespace}/{name} on {node_name} (fewest pods)")
        pod = pods.add_pod(rec, node_name, name, namespace)
        if want_json(output, as_json):
            emit_json(_pod_json(namespace, pod))
        else:
            typer.echo(f"{namespace}/{name} on {pod.node}: {pod.address} (MAC {pod.mac}, host interface "
                       f"{pod.host_ifname}, netns {pod.netns})")
        return 0

    guarded(body)


@pod_app.command("del")
def pod_del(args: List[str] = typer.Argument(..., metavar="NAME", help="Pod name (`NODE NAME` also works)."),
            node: Optional[str] = typer.Option(None, "--node", help="Only if it runs on this node."),
            namespace: str = typer.Option("default", "--namespace", "-n", help="Kubernetes namespace."),
            fabric: str = fabric_option(),
            output: Optional[Output] = output_option("the deleted pod"),
            as_json: bool = JSON_OPTION) -> None:
    """Run DEL for a pod as containerd does (twice) and remove its sandbox namespace."""
    from ..sim import model, pods

    def body() -> int:
        node_name, name = _pod_args(args, node, "del")
        rec = model.load(fabric)
        known = pods.get_pod(rec, namespace, name)
        if known is None:
            raise NotFound(f"no pod {namespace}/{name} in fabric {fabric!r}",
                           f"`vnetctl pod list --fabric {fabric}` lists its pods")
        if node_name is not None and node_name != known.node:
            rec.node(node_name)  # an unknown node is "not found" too
            raise BadArgument(f"pod {namespace}/{name} runs on {known.node}, not on {node_name}")
        pod = pods.delete_pod(rec, known.node, name, namespace)
        if want_json(output, as_json):
            emit_json(dict(_pod_json(namespace, pod), deleted=True))
        else:
            typer.echo(f"{namespace}/{name} deleted from {pod.node} (released {pod.address})")
        return 0

    guarded(body)


@pod_app.command("list")
def pod_list(fabric: str = fabric_option(),
             node: Optional[str] = typer.Option(None, "--node", help="Only this node's pods."),
             output: Optional[Output] = output_option("the pods"),
             as_json: bool = JSON_OPTION) -> None:
    """The pods of the fabric (or of one node)."""
    from ..sim import model, pods, report

    def body() -> int:
        rec = model.load(fabric)
        if node is not None:
            rec.node(node)  # LookupError: not found, like `pod add --node`
        rows = [report.pod_row(p) for p in pods.list_pods(rec, node)]
        if want_json(output, as_json):
            emit_json(rows)
        else:
            report.pods_rows(rows, output == Output.wide)
        return 0

    guarded(body)


# --- demo -----------------------------------------------------------------------------------
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the fabric up at the end."),
    fabric: str = fabric_option(),
    pods_per_node: int = typer.Option(4, "--pods-per-node", help="Pods started on every node."),
    vnetd: bool = typer.Option(True, "--vnetd/--no-vnetd",
                               help="Run vnetd on every node (skipped if not installed), or the plugins in-process."),
    mode: str = typer.Option("bridge", "--mode", help="The vnet plugin's mode: bridge or transparent (routed)."),
    dual_stack: bool = typer.Option(False, "--dual-stack", help="A dual-stack VNet: pods get IPv4 and IPv6."),
) -> None:
    """The whole story in one command: a 3-node VNet, pods, measured connectivity, capacity, cleanup."""
    from ..sim import demo as demo_mod

    _need_root("demo")

    def body() -> int:
        ok = demo_mod.run(console(pipe_width=120), demo_mod.DemoOptions(name=fabric, keep=keep, pods_per_node=pods_per_node,
                                                          vnetd=vnetd, mode=mode,
                                                          subnet6=DEFAULT_SUBNET6 if dual_stack else ""))
        return 0 if ok else 1

    guarded(body)
