"""vnetctl install-cni, probe and uninstall: what the DaemonSet runs on a node, and its removal."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("install-cni")(install_cni)
    app.command("probe")(probe)
    app.command("uninstall")(uninstall)


def _fail(command: str, message: str, code: int = 1) -> None:
    """vnetctl's one error style (cli/common.py); `command` is kept for the callers' sake."""
    from .common import error

    error(message, code=code)


def install_cni(
    source: str = typer.Option("/opt/vnet-cni/cni-bin", "--from", help="Where the image keeps the front doors."),
    cni_bin_dir: str = typer.Option(..., "--cni-bin-dir", help="The host's CNI bin directory (as mounted)."),
    create_dirs: bool = typer.Option(False, "--create-dirs", help="Create --cni-bin-dir if it is missing."),
) -> None:
    """Copy the statically linked front doors `vnet` and `vnet-ipam` into the host's CNI bin
    directory: atomically (temp + rename), skipped when identical. Nothing else (vnetd writes the
    conflist once it serves). The DaemonSet's init container."""
    from ..deploy.binaries import install_binaries

    try:
        done = install_binaries(source, cni_bin_dir, create_dirs)
    except OSError as exc:
        _fail("install-cni", f"{exc.filename}: {exc.strerror}" if exc.strerror and exc.filename else str(exc))
    for path, outcome in done:
        typer.echo(f"{outcome} {path}")


def probe(
    state_dir: str = typer.Option("/var/run/vnet", "--state-dir", help="The node's vnet state directory."),
    timeout: float = typer.Option(2.0, "--timeout", min=0.05, help="Seconds to wait for vnetd's answer."),
    conflist: str = typer.Option("", "--conflist", help="Also require this conflist to be installed "
                                 "(readiness: vnetd installs it once the node can give pods addresses)."),
) -> None:
    """Ask vnetd over its socket for a real answer (a CNI VERSION round trip through its workers),
    within --timeout. Exit 0 if it answers; 1 with the reason if not. The DaemonSet's probes."""
    import os

    from ..deploy.probe import ProbeError, ask_version
    from ..node.layout import LayoutError, NodeLayout

    try:
        sock = NodeLayout(state_dir).socket
    except LayoutError as exc:
        _fail("probe", str(exc), 2)
    try:
        versions = ask_version(sock, timeout)
    except ProbeError as exc:
        _fail("probe", str(exc))
    if conflist and not os.path.isfile(conflist):
        _fail("probe", f"vnetd answers on {sock}, but {conflist} is not installed yet "
                       "(vnetd is waiting for the node's address pool; see its log)")
    typer.echo(f"vnetd answers on {sock} (CNI {', '.join(versions)})")


def uninstall(
    cni_bin_dir: str = typer.Option("/opt/cni/bin", "--cni-bin-dir", help="The CNI bin directory."),
    cni_conf_dir: str = typer.Option("/etc/cni/net.d", "--cni-conf-dir", help="The CNI conf directory."),
    conflist_name: str = typer.Option("", "--conflist-name",
                                      help="Remove only this file (default: every conflist using vnet or vnet-ipam)."),
    state_dir: str = typer.Option("/var/run/vnet", "--state-dir", help="The node's vnet state directory."),
    remove_state: bool = typer.Option(False, "--remove-state", help="Also remove the state directory "
                                      "(refused while vnetd serves it)."),
    prefix: str = typer.Option("/opt/vnet-cni", "--prefix", help="Where `vnetctl install` copied the plugins' "
                               "code (its releases/ are removed)."),
) -> None:
    """Remove vnet-cni from this node: its conflists, the `vnet`/`vnet-ipam` executables and,
    with --remove-state, its state. Stop vnetd first (kubectl delete -f deploy/)."""
    from ..deploy.uninstall import UninstallError, uninstall as do_uninstall

    try:
        done = do_uninstall(cni_bin_dir, cni_conf_dir, conflist_name, state_dir, remove_state, prefix)
    except (UninstallError, OSError) as exc:
        _fail("uninstall", str(exc))
    for path in done.paths:
        typer.echo(f"removed {path}")
    for line in done.kept:
        typer.echo(f"kept {line}")
    if not done.paths:
        typer.echo("nothing of vnet-cni found to remove")
    if done.pending_deletes_left:
        typer.echo(f"note: {done.pending_deletes_left} DEL(s) recorded while vnetd was down were never carried "
                   "out: their host interfaces stay until the node reboots (delete pods before vnetd next time)",
                   err=True)
    if done.endpoints_left:
        typer.echo(f"note: the state held {done.endpoints_left} endpoint(s): their pods keep their "
                   "interfaces until they are deleted", err=True)
