"""vnetctl ipam, vnetctl capacity and vnetctl metadata serve: the node's pool, its capacity,
and a metadata service for nodes (and tests) without one."""

from __future__ import annotations

import time
from typing import Optional

import typer

from .common import JSON_OPTION, Output, emit_json, output_option, want_json
from .node_cmds import CONF_DIR_OPTION, STATE_DIR_OPTION, locate

metadata_app = typer.Typer(help="The node metadata service (NMAgent getinterfaceinfov1).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("ipam")(ipam)
    app.command("capacity")(capacity)
    app.add_typer(metadata_app, name="metadata")


def _fail(command: str, message: str, code: int = 1, hint: str = "") -> None:
    """vnetctl's one error style (cli/common.py); `command` is kept for the callers' sake."""
    from .common import error

    error(message, hint, code)


def ipam(
    state_dir: Optional[str] = STATE_DIR_OPTION,
    cni_conf_dir: Optional[str] = CONF_DIR_OPTION,
    output: Optional[Output] = output_option("the pool"),
    as_json: bool = JSON_OPTION,
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the allocations from endpoints.json "
                                 "after ipam.json was found corrupt (keeps what ipam.json holds)."),
    force: bool = typer.Option(False, "--force", help="With --rebuild: lift the corruption guard even "
                               "without endpoint records to rebuild from (risks duplicate addresses)."),
) -> None:
    """Show the node's address pool: every address, in use / free / cooling / quarantined, owner, pod."""
    from ..cni.errors import CNIError
    from ..ipam.rebuild import rebuild as do_rebuild
    from ..ipam.store import IpamStore
    from ..ipam.view import pool_report
    from .common import CliError

    try:
        state_dir = locate(state_dir, cni_conf_dir).state_dir
    except CliError as exc:
        _fail("ipam", exc.message, exc.exit_code, exc.hint)
    if force and not rebuild:
        from .common import EXIT_BAD_INPUT

        _fail("ipam", "--force only goes with --rebuild", EXIT_BAD_INPUT)
    try:
        report = do_rebuild(state_dir, force=force) if rebuild else None
        store = IpamStore(state_dir)
        data = pool_report(store, store.read(), time.time())
    except CNIError as exc:
        _fail("ipam", exc.msg, hint=exc.details if rebuild else "")
    if report is not None and report.forced:
        from ..ipam.rebuild import FORCE_RISK

        typer.echo(f"WARNING: rebuilt without evidence ({report.forced}): {FORCE_RISK}", err=True)
    if want_json(output, as_json):
        if report is not None:
            data["rebuild"] = report.to_dict()
        emit_json(data)
        return
    if report is not None:
        _print_rebuild(report)
    _print_pool(data, output == Output.wide)


def _print_rebuild(report) -> None:
    if not report.endpoints_found:
        typer.echo("rebuild: no endpoints.json in the state directory (pods of other main plugins "
                   "cannot be recovered from it)")
    typer.echo(f"rebuild: kept {report.kept} allocation(s), adopted {len(report.adopted)} from endpoints.json")
    for line in report.conflicts:
        typer.echo(f"rebuild: conflict: {line}", err=True)
    for line in report.skipped:
        typer.echo(f"rebuild: skipped {line}")
    if report.recovered:
        typer.echo(f"rebuild: accounted for {', '.join(report.recovered)} (kept on disk); ADD works again")


def _print_pool(data: dict, wide: bool = False) -> None:
    from .common import console as make_console, table

    console = make_console()
    pool, refresh, counts = data["pool"], data["refresh"], data["counts"]
    if pool is None:
        console.print(f"no pool learned yet in {data['stateDir']} (source: {refresh.get('source') or '-'}; "
                      f"last error: {refresh.get('lastError') or '-'})")
    else:
        console.print(f"pool {pool['subnet']} of NIC {pool['mac']}: gateway {pool['gateway']}, node address "
                      f"{pool['primary']}, {pool['size']} secondary addresses")
        six = data.get("pool6")
        if six:
            console.print(f"dual-stack pool {six['subnet']}: gateway {six['gateway']}, node address "
                          f"{six['primary']}, {six['size']} secondary addresses (a pod takes one of each family)")
        console.print(f"learned from {pool['source']} at {pool['fetchedAt']}; last attempt "
                      f"{refresh.get('lastAttempt') or '-'}; last error: {refresh.get('lastError') or '-'}")
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if data["needsRebuild"]:
        console.print(f"[bold red]ADD is refused: ipam.json was found corrupt ({', '.join(data['needsRebuild'])}); "
                      f"run `vnetctl ipam --state-dir {data['stateDir']} --rebuild`[/]")
    style = {"in use": "green", "cooling": "yellow", "quarantined": "red", "free": "dim"}
    rows = [[row["address"], row["status"], row["owner"] if wide else _short_owner(row["owner"]),
             row["pod"] or "-", row["since"] if wide else _short_time(row["since"]),
             row["until"] if wide else _short_time(row["until"])] for row in data["addresses"]]
    table(f"vnet-ipam pool in {data['stateDir']}",
          ["address", "status", "owner", "pod", "since (UTC)", "reusable after"], rows,
          [style.get(row["status"], "") for row in data["addresses"]])


def _short_owner(key: str) -> str:
    """network/containerId/ifName with the container ID cut to 12 characters, as runtimes show it."""
    network, _, rest = key.partition("/")
    container, _, ifname = rest.rpartition("/")
    return f"{network}/{container[:12]}/{ifname}" if container else (key or "-")


def _short_time(stamp: str) -> str:
    return stamp[:19].replace("T", " ") if stamp else "-"


def capacity(
    metadata_url: Optional[str] = typer.Option(None, "--metadata-url", help="The metadata API URL (default: "
                                               "the platform's, as vnet-ipam's metadataUrl)."),
    metadata_file: Optional[str] = typer.Option(None, "--metadata-file", help="A getinterfaceinfov1 XML file."),
    mac: Optional[str] = typer.Option(None, "--mac", help="The NIC's MAC (default: the primary NIC)."),
    timeout: float = typer.Option(2.0, "--timeout", help="Seconds to wait for the metadata API."),
    output: Optional[Output] = output_option("the answer"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print the node's secondary address count and the max-pods value to give kubelet."""
    from ..ipam.metadata import MetadataError, normalize_mac
    from ..ipam.sources import FileMetadataSource, HttpMetadataSource
    from ..ipam.view import node_capacity

    from ..ipam.config import DEFAULT_METADATA_URL

    if metadata_url and metadata_file:
        _fail("capacity", "give one of --metadata-url or --metadata-file, not both", 2)
    if not metadata_url and not metadata_file:
        metadata_url = DEFAULT_METADATA_URL  # as vnet-ipam: the platform's metadata service
    try:
        nic = normalize_mac(mac) if mac else None
    except ValueError as exc:
        _fail("capacity", str(exc), 2)
    source = FileMetadataSource(metadata_file) if metadata_file else HttpMetadataSource(metadata_url, timeout)
    try:
        cap = node_capacity(source, nic)
    except MetadataError as exc:
        _fail("capacity", str(exc))
    if want_json(output, as_json):
        emit_json(cap.to_dict())
        return
    typer.echo(f"NIC {cap.pool.mac} in {cap.pool.subnet}: node address {cap.pool.primary}, "
               f"{len(cap.pool.addresses)} secondary addresses")
    if cap.pool6 is not None:
        typer.echo(f"dual-stack, in {cap.pool6.subnet}: node address {cap.pool6.primary}, "
                   f"{len(cap.pool6.addresses)} secondary addresses (a pod takes one of each family)")
    typer.echo(f"max-pods: {cap.max_pods}")
    typer.echo(f"kubelet flag:        --max-pods={cap.max_pods}")
    typer.echo(f"kubelet config file: maxPods: {cap.max_pods}")
    typer.echo("(one pod address per secondary address; hostNetwork pods do not need one, but kubelet "
               "counts them in max-pods too, so this value can never exhaust the node)")


@metadata_app.command("serve")
def metadata_serve(
    listen: str = typer.Option(..., "--listen", help="HOST:PORT to bind (an IP address; [v6]:port)."),
    interfaces: str = typer.Option(..., "--interfaces", help="The getinterfaceinfov1 XML file to serve "
                                   "(re-read when it changes)."),
    verbose: bool = typer.Option(False, "--verbose", help="Log every request to stderr."),
) -> None:
    """Serve a metadata file over HTTP exactly as the node's metadata API does (blocks)."""
    import os
    import signal

    from ..ipam.server import make_server, parse_listen

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        _fail("metadata serve", str(exc), 2)
    if not os.path.isfile(interfaces):
        _fail("metadata serve", f"{interfaces} is not a file", 3)
    try:
        server = make_server(host, port, interfaces, verbose=verbose)
    except OSError as exc:
        _fail("metadata serve", f"cannot listen on {listen}: {exc.strerror}")

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    typer.echo(f"serving {interfaces} at {server.url}", err=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
