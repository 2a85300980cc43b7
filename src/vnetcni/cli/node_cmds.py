"""vnetctl install, status, endpoints and gc: putting vnet-cni on a node, and what the node holds (its state found on its own: vnetcni.node.find)."""

from __future__ import annotations

from typing import Optional

import typer

from .common import JSON_OPTION, Output, emit_json, guarded, output_option, say, table, want_json


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
    uplink: str = typer.Option("", "--uplink", help="Interface to enslave to the bridge (the VNet NIC); in "
                               "transparent mode only the pods' MTU comes from it."),
    mode: str = typer.Option("bridge", "--mode", help="vnet's mode in the conflist: bridge, or transparent "
                             "(routed; the node must forward)."),
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

    if mode not in ("bridge", "transparent"):
        from .common import EXIT_BAD_INPUT, error

        error(f"--mode must be bridge or transparent, not {mode!r}", code=EXIT_BAD_INPUT)
    conflist = default_conflist(network, bridge, state_dir, metadata_url, metadata_file, uplink, cni_version,
                                mode=mode)
    try:
        if no_fallback and no_compile:
            raise RuntimeError("--no-fallback installs only compiled front doors: it cannot go with --no-compile")
        res = do_install(cni_bin_dir, cni_conf_dir or "", not no_compile, conflist, fallback=not no_fallback,
                         prefix="" if no_fallback else prefix, create_dirs=create_dirs)
    except (OSError, RuntimeError) as exc:
        from .common import error

        error(str(exc))
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


STATE_DIR_OPTION = typer.Option(None, "--state-dir", help="The node's vnet state directory (default: found "
                                "from the installed conflist or the running vnetd).")
CONF_DIR_OPTION = typer.Option(None, "--cni-conf-dir", help="Where to look for the installed conflist "
                               "(default /etc/cni/net.d).")


def locate(state_dir: Optional[str], cni_conf_dir: Optional[str], quiet: bool = False):
    """This node's FoundNode (said on stderr); NotFound when none is named or its state is missing."""
    import os

    from ..node.find import NodeNotFound, find_node
    from .common import NotFound, say

    try:
        found = find_node(state_dir, cni_conf_dir)
    except NodeNotFound as exc:
        raise NotFound(exc.message, exc.hint) from None
    if not os.path.isdir(found.state_dir):
        raise NotFound(f"no vnet state at {found.state_dir} (from {found.source}): no pod has been "
                       "added on this node and vnetd never ran here",
                       "check --state-dir / --cni-conf-dir, or that this is the node you meant")
    if not quiet:
        say(f"reading {found.describe()}")
    return found


def _pod_name(rec) -> str:
    return "/".join(x for x in (rec.pod_namespace, rec.pod_name) if x) or "-"


def endpoints(
    state_dir: Optional[str] = STATE_DIR_OPTION,
    cni_conf_dir: Optional[str] = CONF_DIR_OPTION,
    output: Optional[Output] = output_option("the records"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show every pod endpoint vnet recorded on this node."""

    def body() -> int:
        from ..plugins.endpoints import EndpointStore

        found = locate(state_dir, cni_conf_dir)
        records = EndpointStore(found.state_dir).all()
        ordered = sorted(records.values(), key=lambda r: (r.pod_namespace, r.pod_name))
        if want_json(output, as_json):
            emit_json([r.to_dict() for r in ordered])
            return 0
        wide = output == Output.wide
        cols = ["pod", "container", "address", "host if", "netns"]
        if wide:
            cols += ["network", "if", "mac", "bridge", "created", "state"]
        rows = []
        for rec in ordered:
            row = [_pod_name(rec), rec.container_id if wide else rec.container_id[:12],
                   ", ".join(rec.ips), rec.host_ifname, rec.netns or "-"]
            if wide:
                row += [rec.network, rec.ifname, rec.mac, rec.bridge, rec.created,
                        f"tearing down since {rec.tearing_down}" if rec.tearing_down else "attached"]
            rows.append(row)
        table(f"vnet endpoints in {found.state_dir}", cols, rows)
        if not records:
            say("no endpoints recorded")
        return 0

    guarded(body)


def gc(
    state_dir: Optional[str] = STATE_DIR_OPTION,
    cni_conf_dir: Optional[str] = CONF_DIR_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be pruned."),
    output: Optional[Output] = output_option("what was pruned"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Prune endpoints whose pod is known to be gone (a reboot, a DEL that never came): veth
    removed, vnet-ipam address released (after its cooldown), record dropped. Only on evidence:
    the veth is gone and so is the netns from the host's point of view, or the node rebooted
    since the ADD; from a namespace that cannot tell (a container with its own /run/netns),
    nothing is pruned. vnetd does this at start too."""

    def body() -> int:
        from ..dataplane.linux import LinuxDataplane
        from ..plugins.reconcile import reconcile

        found = locate(state_dir, cni_conf_dir)
        dataplane = LinuxDataplane(lock_dir=found.layout.lock_dir)  # dry runs look at the veths too
        try:
            done = reconcile(found.state_dir, dataplane, dry_run=dry_run)
        finally:
            dataplane.close()

        def row(item) -> dict:
            r = item.record
            return {"pod": _pod_name(r), "container_id": r.container_id, "ips": r.ips,
                    "host_if_name": r.host_ifname, "netns": r.netns, "evidence": item.why}

        pruned = [row(i) for i in done.pruned]
        unverified = [row(i) for i in done.unverified]
        if want_json(output, as_json):
            emit_json({"state_dir": found.state_dir, "source": found.source, "dry_run": dry_run,
                       "pruned": pruned, "kept": done.kept, "unverified": unverified,
                       "not_released": list(done.not_released)})
            return 0
        verb = "would prune" if dry_run else "pruned"
        for rec in pruned:
            pod = rec["pod"] if rec["pod"] != "-" else rec["container_id"][:12]
            typer.echo(f"{verb} {pod}: {', '.join(rec['ips'])} on {rec['host_if_name']} ({rec['evidence']})")
        for rec in unverified:
            pod = rec["pod"] if rec["pod"] != "-" else rec["container_id"][:12]
            say(f"kept {pod}: {rec['evidence']}")
        typer.echo(f"{len(pruned)} stale, {done.kept} kept endpoint(s) in {found.state_dir}"
                   + (f" ({len(unverified)} not verifiable from here)" if unverified else ""))
        if done.not_released:
            say("not released (their IPAM is not vnet-ipam; its own GC must release them): "
                + ", ".join(done.not_released))
        return 0

    guarded(body)


def status_data(found) -> dict:
    """What `vnetctl status` shows, as data."""
    import os

    from ..daemon.client import listening
    from ..ipam.allocator import usage
    from ..ipam.store import IpamStore
    from ..plugins.endpoints import EndpointStore
    from ..plugins.reconcile import classify

    layout = found.layout
    running = listening(layout.socket)
    if running:
        detail = "running"
    elif os.path.exists(layout.socket):
        detail = "not running (stale socket file)"
    else:
        detail = "not running (front doors with a fallback work in-process; no-fallback ones answer ADD with code 11)"
    from ..daemon import pending

    data = {"node": {"state_dir": layout.state_dir, "source": found.source},
            "vnetd": {"running": running, "socket": layout.socket, "detail": detail, "deadlines": None,
                      "pending_deletes": pending.count(layout)}}
    if running:
        from ..daemon import stats

        counters = stats.read(layout.daemon_stats)
        if counters is not None:
            data["vnetd"]["deadlines"] = {"counts": counters["counts"], "started": counters.get("started"),
                                          "last": counters.get("last"), "summary": stats.summary(counters)}
    pool = None
    if os.path.exists(layout.ipam_file):
        state = IpamStore(layout.state_dir).read()
        held, listed = usage(state)
        learned = state.pool
        pool = {"in_use": held, "size": listed,
                "subnet": str(learned.subnet) if learned else None,
                "gateway": str(learned.gateway) if learned else None,
                "last_error": state.refresh.last_error or None}
    data["pool"] = pool
    records = EndpointStore(layout.state_dir).all()
    from ..dataplane.linux import LinuxDataplane

    dp = LinuxDataplane(lock_dir=layout.lock_dir)  # reads only
    try:
        stale, _unverified, _live = classify(records, dp)
    finally:
        dp.close()
    data["endpoints"] = {"recorded": len(records), "stale": len(stale),
                         "tearing_down": sum(1 for r in records.values() if r.tearing_down)}
    data["services"] = _prerequisites(records, layout)
    return data


def status(
    state_dir: Optional[str] = STATE_DIR_OPTION,
    cni_conf_dir: Optional[str] = CONF_DIR_OPTION,
    output: Optional[Output] = output_option("the status"),
    as_json: bool = JSON_OPTION,
) -> None:
    """One screen on this node: which state was read, vnetd, the address pool, the endpoints."""

    def body() -> int:
        found = locate(state_dir, cni_conf_dir, quiet=True)
        data = status_data(found)
        if want_json(output, as_json):
            emit_json(data)
            return 0
        typer.echo(f"node:       {found.describe()}")
        v = data["vnetd"]
        typer.echo(f"vnetd:      {v['detail']} ({v['socket']})")
        if v["pending_deletes"]:
            typer.echo(f"pending:    {v['pending_deletes']} DEL(s) recorded while vnetd did not answer; "
                       "vnetd carries them out when it serves")
        pool = data["pool"]
        if pool is None:
            typer.echo("pool:       no vnet-ipam state yet (no pod added on this node)")
        else:
            learned = f"subnet {pool['subnet']}, gateway {pool['gateway']}" if pool["subnet"] else "not learned yet"
            err = f"; last metadata error: {pool['last_error']}" if pool["last_error"] else ""
            typer.echo(f"pool:       {pool['in_use']} of {pool['size']} addresses in use ({learned}){err}")
        ep = data["endpoints"]
        line = f"endpoints:  {ep['recorded']} recorded"
        if ep["tearing_down"]:
            line += f", {ep['tearing_down']} tearing down (DEL answered; vnetd removes the veth, then frees the address)"
        typer.echo(line + (f", {ep['stale']} stale (run `vnetctl gc`)" if ep["stale"] else ""))
        if v["deadlines"] is not None:
            typer.echo(f"deadlines:  {v['deadlines']['summary']}")
        svc = data["services"]
        typer.echo("services:   " + ("node ready for kube-proxy" if svc["ready"] else "NOT READY: STATUS answers code 50"))
        for f in svc["checks"]:
            typer.echo(f"  {'ok  ' if f['ok'] else 'FAIL'} {f['name']}: {f['found']}"
                       + (f"\n       fix: {f['fix']}" if f["fix"] else ""))
        return 0

    guarded(body)


def _prerequisites(records: dict, layout) -> dict:
    """What kube-proxy needs from this node (as vnet's STATUS judges it), with the fix for each
    check that fails; read in the namespace vnetctl runs in (the node's)."""
    from ..dataplane import prereqs
    from ..dataplane.linux import LinuxDataplane

    bridges = sorted({r.bridge for r in records.values() if r.bridge})
    bridged = not records or any((r.mode or "bridge") == "bridge" for r in records.values())
    dp = LinuxDataplane(lock_dir=layout.lock_dir)  # reads only: no lock is taken
    try:
        findings = prereqs.evaluate(dp.node_facts(bridges[0] if bridges else "azure0"), bridged=bridged)
    finally:
        dp.close()
    return {"ready": all(f.ok for f in findings),
            "checks": [{"name": f.name, "ok": f.ok, "found": f.found, "fix": f.fix or None} for f in findings]}
