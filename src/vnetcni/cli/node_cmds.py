"""vnetctl install and vnetctl endpoints: putting vnet-cni on a node, and what it recorded."""

from __future__ import annotations

import json
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("install")(install)
    app.command("status")(status)
    app.command("endpoints")(endpoints)
    app.command("gc")(gc)


def install(
    cni_bin_dir: str = typer.Option(..., "--cni-bin-dir", help="Where the runtime looks for plugins (e.g. /opt/cni/bin)."),
    cni_conf_dir: Optional[str] = typer.Option(None, "--cni-conf-dir", help="Also write a conflist here (vnet + reference portmap)."),
    state_dir: str = typer.Option("/var/run/vnet", "--state-dir", help="stateDir written into the conflist."),
    bridge: str = typer.Option("azure0", "--bridge", help="Bridge name written into the conflist."),
    metadata_url: str = typer.Option("", "--metadata-url", help="metadataUrl for vnet-ipam (default: the platform's)."),
    metadata_file: str = typer.Option("", "--metadata-file", help="metadataFile for vnet-ipam, for nodes without a metadata service."),
    uplink: str = typer.Option("", "--uplink", help="Interface to enslave to the bridge (the VNet NIC)."),
    network: str = typer.Option("vnet", "--network", help="Network name in the conflist."),
    cni_version: str = typer.Option("1.0.0", "--cni-version", help="cniVersion of the conflist (podman 4.3 needs <= 1.0.0)."),
    no_compile: bool = typer.Option(False, "--no-compile", help="Install the Python entries as front doors (no C client)."),
    no_fallback: bool = typer.Option(False, "--no-fallback", help="Only compiled front doors, no Python on the host: every call needs vnetd (for images)."),
    prefix: str = typer.Option("/opt/vnet-cni", "--prefix", help="Root-owned directory the plugins' code is "
                               "copied into; the installed entries import only from there."),
    create_dirs: bool = typer.Option(False, "--create-dirs", help="Create --cni-bin-dir / --cni-conf-dir if missing "
                                     "(refused otherwise: a mistyped directory is an error)."),
) -> None:
    """Install the `vnet` and `vnet-ipam` executables (and optionally a conflist). Their code is
    copied into --prefix first, so they never run code from a user-owned checkout."""
    from ..plugins.install import default_conflist, install as do_install

    conflist = default_conflist(network, bridge, state_dir, metadata_url, metadata_file, uplink, cni_version)
    try:
        if no_fallback and no_compile:
            raise RuntimeError("--no-fallback installs only compiled front doors: it cannot go with --no-compile")
        res = do_install(cni_bin_dir, cni_conf_dir or "", not no_compile, conflist, fallback=not no_fallback,
                         prefix="" if no_fallback else prefix, create_dirs=create_dirs)
    except (OSError, RuntimeError) as exc:
        typer.echo(f"vnetctl install: {exc}", err=True)
        raise typer.Exit(1)
    kind = ("compiled front doors (vnetd only, no fallback)" if no_fallback else
            "compiled front doors (vnetd when running, else in-process)" if res.compiled else "Python entries")
    if res.release:
        typer.echo(f"copied the plugins' code into {res.release}")
    for path in res.executables:
        typer.echo(f"installed {path} ({kind})")
    if res.conflist:
        typer.echo(f"wrote {res.conflist}")
    for note in res.notes:
        typer.echo(f"note: {note}", err=True)


def endpoints(
    state_dir: str = typer.Option("/var/run/vnet", "--state-dir", help="The node's vnet state directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
) -> None:
    """Show every pod endpoint vnet recorded on this node."""
    from ..cni.errors import CNIError
    from ..plugins.endpoints import EndpointStore

    try:
        records = EndpointStore(state_dir).all()
    except CNIError as exc:
        typer.echo(f"vnetctl endpoints: {exc.msg}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(list(records.values()), indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vnet endpoints in {state_dir}")
    for col in ("pod", "container", "network", "address", "mac", "host if", "bridge", "netns", "created"):
        table.add_column(col)
    for rec in sorted(records.values(), key=lambda r: (r.get("podNamespace", ""), r.get("podName", ""))):
        pod = "/".join(x for x in (rec.get("podNamespace"), rec.get("podName")) if x) or "-"
        table.add_row(pod, rec["containerId"][:12], rec["network"], ", ".join(rec["ips"]), rec.get("mac", ""),
                      rec["hostIfName"], rec["bridge"], rec["netns"], rec.get("created", ""))
    Console().print(table)
    if not records:
        typer.echo("no endpoints recorded")


def gc(
    state_dir: str = typer.Option("/var/run/vnet", "--state-dir", help="The node's vnet state directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be pruned."),
) -> None:
    """Prune endpoints whose pod namespace is gone (a reboot, a DEL that never came): veth removed,
    vnet-ipam address released, record dropped. vnetd does this at start too."""
    from ..cni.errors import CNIError
    from ..plugins.reconcile import reconcile

    dataplane = None
    if not dry_run:
        from ..dataplane.linux import LinuxDataplane
        from ..node.layout import NodeLayout

        dataplane = LinuxDataplane(lock_dir=NodeLayout(state_dir).lock_dir)
    try:
        done = reconcile(state_dir, dataplane, dry_run=dry_run)
    except CNIError as exc:
        typer.echo(f"vnetctl gc: {exc.msg}", err=True)
        raise typer.Exit(1)
    verb = "would prune" if dry_run else "pruned"
    for rec in done.pruned:
        pod = "/".join(x for x in (rec.get("podNamespace"), rec.get("podName")) if x) or rec["containerId"][:12]
        typer.echo(f"{verb} {pod}: {', '.join(rec['ips'])} on {rec['hostIfName']} (netns {rec['netns'] or '-'} is gone)")
    typer.echo(f"{len(done.pruned)} stale, {done.kept} live endpoint(s) in {state_dir}")
    if done.not_released:
        typer.echo("not released (their IPAM is not vnet-ipam; its own GC must release them): "
                   + ", ".join(done.not_released), err=True)


def status(
    state_dir: str = typer.Option("/var/run/vnet", "--state-dir", help="The node's vnet state directory."),
) -> None:
    """One screen on this node: vnetd, the address pool, the endpoints."""
    import os

    from ..cni.errors import CNIError
    from ..daemon.client import listening
    from ..plugins.endpoints import EndpointStore
    from ..plugins.reconcile import stale_records

    sock = os.path.join(state_dir, "vnetd.sock")
    running = listening(sock)
    if running:
        daemon = f"running ({sock})"
    else:
        daemon = "stale socket file: not running" if os.path.exists(sock) else "not running (plugins work in-process)"
    typer.echo(f"vnetd:      {daemon}")
    if running:
        from ..daemon import stats
        from ..node.layout import NodeLayout

        counters = stats.read(NodeLayout(state_dir).daemon_stats)
        if counters is not None:
            typer.echo(f"deadlines:  {stats.summary(counters)}")
    try:
        from ..ipam.allocator import usage
        from ..ipam.store import IpamStore

        if os.path.exists(os.path.join(state_dir, "ipam.json")):
            state = IpamStore(state_dir).read()
            held, listed = usage(state)
            pool = state.pool
            learned = f"subnet {pool.subnet}, gateway {pool.gateway}" if pool else "not learned yet"
            err = f"; last metadata error: {state.refresh.last_error}" if state.refresh.last_error else ""
            typer.echo(f"pool:       {held} of {listed} addresses in use ({learned}){err}")
        else:
            typer.echo("pool:       no vnet-ipam state here yet")
        records = EndpointStore(state_dir).all()
        stale = stale_records(state_dir)
    except CNIError as exc:
        typer.echo(f"vnetctl status: {exc.msg}", err=True)
        raise typer.Exit(1)
    typer.echo(f"endpoints:  {len(records)} recorded, {len(stale)} stale (run `vnetctl gc`)" if stale
               else f"endpoints:  {len(records)} recorded")
    _print_prerequisites(records, state_dir)


def _print_prerequisites(records: dict, state_dir: str) -> None:
    """What kube-proxy needs from this node (as vnet's STATUS judges it), with the fix for each
    check that fails; read in the namespace vnetctl runs in (the node's)."""
    from ..dataplane import prereqs
    from ..dataplane.linux import LinuxDataplane
    from ..node.layout import NodeLayout

    bridges = sorted({r.get("bridge") for r in records.values() if r.get("bridge")})
    bridged = not records or any(r.get("mode", "bridge") == "bridge" for r in records.values())
    dp = LinuxDataplane(lock_dir=NodeLayout(state_dir).lock_dir)  # reads only: no lock is taken
    try:
        findings = prereqs.evaluate(dp.node_facts(bridges[0] if bridges else "azure0"), bridged=bridged)
    finally:
        dp.close()
    ready = all(f.ok for f in findings)
    typer.echo("services:   " + ("node ready for kube-proxy" if ready else "NOT READY: STATUS answers code 50"))
    for f in findings:
        typer.echo(f"  {'ok  ' if f.ok else 'FAIL'} {f.name}: {f.found}" + (f"\n       fix: {f.fix}" if f.fix else ""))
