"""vnetctl fabric up|down|status|capacity, vnetctl pod add|del|list and vnetctl demo: the simulated VNet."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ..sim import naming

fabric_app = typer.Typer(help="The simulated VNet: a fabric namespace, node namespaces, metadata services.",
                         no_args_is_help=True)
pod_app = typer.Typer(help="Pods on a simulated node, created through the node's CNI chain as a runtime does.",
                      no_args_is_help=True)

NAME_OPTION = typer.Option(naming.DEFAULT_FABRIC, "--name", help="The fabric's name.")
FABRIC_OPTION = typer.Option(naming.DEFAULT_FABRIC, "--fabric", help="The fabric's name.")


def register(app: typer.Typer) -> None:
    from . import service_cmds

    service_cmds.register(fabric_app)
    app.add_typer(fabric_app, name="fabric")
    app.add_typer(pod_app, name="pod")
    app.command("demo")(demo)


def _fail(what: str, exc: BaseException) -> typer.Exit:
    from ..cni.errors import CNIError

    if isinstance(exc, CNIError):
        msg = f"{exc.msg} (CNI error {exc.code})" + (f": {exc.details}" if exc.details else "")
    else:
        msg = str(exc)
    typer.echo(f"vnetctl {what}: {msg}", err=True)
    return typer.Exit(1)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from ..cni.errors import CNIError
    from ..sim.errors import SimError

    return (SimError, CNIError, ValueError, LookupError, OSError)


def _console():
    import os
    import sys

    from rich.console import Console

    # A MAC like ..:cd:.. is not an emoji code. Piped output (CI logs) gets room for the tables.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    return Console(highlight=False, emoji=False, width=width, log_path=False)


# --- fabric ---------------------------------------------------------------------------------
@fabric_app.command("up")
def fabric_up(
    nodes: int = typer.Option(3, "--nodes", help="How many nodes (VMs) the VNet has."),
    ips_per_node: int = typer.Option(30, "--ips-per-node", help="Secondary addresses per node's NIC."),
    subnet: str = typer.Option("10.240.0.0/16", "--subnet", help="The VNet subnet."),
    name: str = NAME_OPTION,
    enforce_source: bool = typer.Option(False, "--enforce-source",
                                        help="Drop (and count) traffic a node sends from addresses it does not own."),
    vnetd: bool = typer.Option(False, "--vnetd", help="Run vnetd on every node (skipped if not installed)."),
    reuse_cooldown: float = typer.Option(0.0, "--reuse-cooldown",
                                         help="vnet-ipam reuseCooldownSeconds in the nodes' conflists."),
    mode: str = typer.Option("bridge", "--mode",
                             help="The vnet plugin's mode on every node: bridge, or transparent (routed; "
                                  "the fabric then delivers each secondary address to its node, as the SDN does)."),
) -> None:
    """Bring a simulated VNet up (leftovers of a crashed run with this name are removed first)."""
    from ..sim import fabric

    console = _console()
    opts = fabric.FabricOptions(name=name, nodes=nodes, ips_per_node=ips_per_node, subnet=subnet,
                                enforce_source=enforce_source, vnetd=vnetd, reuse_cooldown=reuse_cooldown,
                                mode=mode)
    try:
        with console.status("bringing the fabric up") as status:
            rec = fabric.up(opts, progress=lambda m: (console.log(m), status.update(m)))
    except _expected_errors() as exc:
        raise _fail("fabric up", exc)
    console.print(f"fabric [bold]{rec.name}[/] is up ({rec.mode} mode): {len(rec.nodes)} nodes on {rec.subnet}, "
                  f"gateway {rec.gateway}; state in {rec.directory}")
    console.print(f"try: vnetctl pod add {rec.nodes[0].name} web --fabric {rec.name}")


@fabric_app.command("down")
def fabric_down(name: str = NAME_OPTION) -> None:
    """Remove the fabric: daemons, pod, node and fabric namespaces, its state directory."""
    from ..sim import fabric

    console = _console()
    try:
        removed = fabric.down(name, progress=lambda m: console.log(m))
    except _expected_errors() as exc:
        raise _fail("fabric down", exc)
    if not removed["namespaces"] and not removed["stateDir"]:
        console.print(f"fabric {name!r} was not up; nothing to remove")
    else:
        console.print(f"fabric {name!r} removed: {removed['namespaces']} namespaces, "
                      f"{removed['processes']} processes")


@fabric_app.command("status")
def fabric_status(name: str = NAME_OPTION,
                  as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Nodes, their addresses and pools, and the pods on them."""
    from ..sim import report

    try:
        data = report.status(name)
    except _expected_errors() as exc:
        raise _fail("fabric status", exc)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    report.print_status(_console(), data)


@fabric_app.command("capacity")
def fabric_capacity(name: str = NAME_OPTION,
                    as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """max-pods each node should advertise, from the node's own metadata service."""
    from ..sim import inventory, model

    try:
        caps = inventory.fabric_capacity(model.load(name))
    except _expected_errors() as exc:
        raise _fail("fabric capacity", exc)
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in caps], indent=2))
        return
    for c in caps:
        typer.echo(f"{c.node}: max-pods {c.max_pods} ({c.secondary_addresses} secondary addresses; "
                   f"primary {c.primary}, MAC {c.mac})")


# --- pods -----------------------------------------------------------------------------------
@pod_app.command("add")
def pod_add(node: str = typer.Argument(..., help="Node name, e.g. node1."),
            name: str = typer.Argument(..., help="Pod name."),
            namespace: str = typer.Option("default", "--namespace", "-n", help="Kubernetes namespace."),
            fabric: str = FABRIC_OPTION) -> None:
    """Create a pod sandbox on a node and run the node's CNI chain (ADD) for it."""
    from ..sim import model, pods

    try:
        rec = pods.add_pod(model.load(fabric), node, name, namespace)
    except _expected_errors() as exc:
        raise _fail("pod add", exc)
    typer.echo(f"{namespace}/{name} on {rec.node}: {rec.address} (MAC {rec.mac}, host interface "
               f"{rec.host_ifname}, netns {rec.netns})")


@pod_app.command("del")
def pod_del(node: str = typer.Argument(..., help="Node name."),
            name: str = typer.Argument(..., help="Pod name."),
            namespace: str = typer.Option("default", "--namespace", "-n", help="Kubernetes namespace."),
            fabric: str = FABRIC_OPTION) -> None:
    """Run DEL for a pod as containerd does (twice) and remove its sandbox namespace."""
    from ..sim import model, pods

    try:
        rec = pods.delete_pod(model.load(fabric), node, name, namespace)
    except _expected_errors() as exc:
        raise _fail("pod del", exc)
    typer.echo(f"{namespace}/{name} deleted from {rec.node} (released {rec.address})")


@pod_app.command("list")
def pod_list(fabric: str = FABRIC_OPTION, node: Optional[str] = typer.Option(None, "--node"),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The pods of the fabric (or of one node)."""
    from ..sim import model, pods, report

    try:
        found = pods.list_pods(model.load(fabric), node)
    except _expected_errors() as exc:
        raise _fail("pod list", exc)
    rows = [report.pod_row(p) for p in found]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _console().print(report.pods_table(rows))


# --- demo -----------------------------------------------------------------------------------
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the fabric up at the end."),
    name: str = typer.Option(naming.DEFAULT_FABRIC, "--name", help="The fabric's name."),
    pods_per_node: int = typer.Option(4, "--pods-per-node", help="Pods started on every node."),
    vnetd: bool = typer.Option(True, "--vnetd/--no-vnetd",
                               help="Run vnetd on every node (skipped if not installed), or the plugins in-process."),
    mode: str = typer.Option("bridge", "--mode", help="The vnet plugin's mode: bridge or transparent (routed)."),
) -> None:
    """The whole story in one command: a 3-node VNet, pods, measured connectivity, capacity, cleanup."""
    from ..sim import demo as demo_mod

    console = _console()
    try:
        ok = demo_mod.run(console, demo_mod.DemoOptions(name=name, keep=keep, pods_per_node=pods_per_node,
                                                        vnetd=vnetd, mode=mode))
    except _expected_errors() as exc:
        raise _fail("demo", exc)
    if not ok:
        raise typer.Exit(1)
