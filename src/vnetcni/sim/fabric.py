"""Bringing a simulated VNet up and down.

    fabric namespace  <prefix><name>-fabric : bridge vnet0 = the VNet's L2 segment, with the
                                              subnet's gateway address; nft counters (and, with
                                              enforce_source, the cloud's source check)
        p-node1 ──veth── eth0 in <prefix><name>-node1 (the node's primary address, its MAC)
        p-node2 ──veth── eth0 in <prefix><name>-node2
        ...
Each node namespace also runs its own metadata service on 127.0.0.1 (so only that node sees its
answer), has a conflist, a state directory and, optionally, vnetd. No link of the fabric ever
exists in the root namespace: the veths are created between namespaces, and nothing routes
between the fabric and the machine's network.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Iterator

from ..node.layout import NodeLayout
from ..ipam.metadata import render_node
from ..plugins.install import default_conflist
from . import enforcement, kernel, model, naming, processes, sdn, services
from .addressing import AddressPlan, NodeAddresses, plan_addresses
from .errors import SimError
from .model import FabricRecord, NodeRecord

NETWORK_NAME = "vnet"
CONFLIST_NAME = "10-vnet.conflist"
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


METRICS_PORT = 9401  # vnetd's metrics port on every node with `fabric up --metrics`


@dataclass(frozen=True)
class FabricOptions:
    """What `vnetctl fabric up` builds. The nodes are configured like real ones: vnetd on (as the
    DaemonSet runs it) and vnet-ipam's own defaults (reuse cooldown None: the plugin's 30 s)."""
    name: str = naming.DEFAULT_FABRIC
    nodes: int = 3
    ips_per_node: int = 30
    subnet: str = "10.240.0.0/16"
    enforce_source: bool = False
    vnetd: bool = True
    mode: str = sdn.MODE_BRIDGE  # the vnet plugin's mode on every node; transparent: the SDN delivers
    reuse_cooldown: float | None = None
    subnet6: str = ""  # dual-stack: the VNet's IPv6 subnet beside the IPv4 one
    metrics: bool = False        # vnetd serves metrics on <node primary>:METRICS_PORT
    replace: bool = False        # tear down a fabric of that name that is up (its pods too)


def check_metadata_size(plan: AddressPlan) -> None:
    """Refuse a pool whose metadata answer vnet-ipam would reject (MAX_METADATA_BYTES), naming the
    real limit: the most secondary addresses per node that fit."""
    from ..ipam.metadata import MAX_METADATA_BYTES

    if not plan.nodes:
        return
    last = plan.nodes[-1]  # the longest addresses

    def size(n: int) -> int:
        ipv6 = (plan.subnet6, last.primary6, list(last.secondaries6[:n])) if plan.subnet6 else None
        return len(render_node(last.mac, plan.subnet, last.primary, list(last.secondaries[:n]), ipv6=ipv6))

    count = len(last.secondaries)
    if size(count) <= MAX_METADATA_BYTES:
        return
    lo, hi = 0, count  # size(lo) fits, size(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) <= MAX_METADATA_BYTES else (lo, mid)
    raise ValueError(f"--ips-per-node {count} is too many: a node's metadata answer would be {size(count)} "
                     f"bytes, over vnet-ipam's limit of {MAX_METADATA_BYTES} bytes; at most {lo} "
                     "secondary addresses per node fit")


# How long a `fabric up/down/repair` waits for another one to finish: a fabric of many nodes
# takes tens of seconds to come up on a loaded machine; a holder stuck longer than this is an
# error to report, never a wait without end.
FABRIC_LOCK_SECONDS = 300.0


@contextlib.contextmanager
def fabric_lock(timeout: float = FABRIC_LOCK_SECONDS) -> Iterator[None]:
    """One `fabric up/down/repair` at a time (a kernel flock on the root directory: released if
    we die, and no lock file is left behind). Waiting ends after `timeout` seconds with SimError."""
    import time

    os.makedirs(naming.root_dir(), mode=0o755, exist_ok=True)
    fd = os.open(naming.root_dir(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        started = time.monotonic()
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout:
                    raise SimError(f"another `vnetctl fabric` operation has held {naming.root_dir()} for "
                                   f"{waited:.0f}s; wait for it to finish (or stop it) and try again") from None
                time.sleep(min(pause, timeout - waited))
                pause = min(pause * 2, 0.2)
        yield
    finally:
        os.close(fd)


def conflist_for(node: NodeRecord, reuse_cooldown: float, mode: str = sdn.MODE_BRIDGE) -> dict:
    """The node's CNI configuration, as `vnetctl install` writes one: vnet (in `mode`; eth0 as
    uplink: enslaved in bridge mode, the MTU's source in transparent mode; the node's own
    metadata service) then portmap."""
    return default_conflist(name=NETWORK_NAME, bridge=node.bridge, state_dir=node.stateDir,
                            metadata_url=node.metadataUrl, uplink=node.eth0, cni_version="1.0.0",
                            reuse_cooldown=reuse_cooldown, mode=mode)


# --- up ------------------------------------------------------------------------------------
def up(opts: FabricOptions, progress: Progress = _quiet) -> FabricRecord:
    """Build the fabric; leftovers of a crashed run with this name are removed first."""
    naming.check_fabric_name(opts.name)
    plan = plan_addresses(opts.name, opts.subnet, opts.nodes, opts.ips_per_node, opts.subnet6)
    if opts.mode not in sdn.MODES:
        raise ValueError(f"--mode must be one of {', '.join(sdn.MODES)}, got {opts.mode!r}")
    check_metadata_size(plan)
    if opts.reuse_cooldown is not None and not 0 <= opts.reuse_cooldown <= 3600:
        raise ValueError(f"--reuse-cooldown must be between 0 and 3600 seconds, got {opts.reuse_cooldown:g}")
    if opts.metrics and not opts.vnetd:
        raise ValueError("--metrics needs vnetd on the nodes (drop --no-vnetd)")
    if opts.vnetd and not services.vnetd_available():
        progress("vnetd is not installed: nodes run the plugins in-process")
    with fabric_lock():
        existing = _existing(opts.name)
        if existing is not None and not opts.replace:
            raise FabricUp(existing)
        if _leftovers(opts.name):
            what = "replacing fabric" if existing is not None else "removing leftovers of a previous run of fabric"
            progress(f"{what} {opts.name!r}")
            _teardown(opts.name, _quiet)
        record = FabricRecord(
            name=opts.name, subnet=plan.subnet, gateway=plan.gateway,
            fabricNetns=naming.fabric_netns(opts.name), fabricBridge=naming.FABRIC_BRIDGE,
            ipsPerNode=opts.ips_per_node, enforceSource=opts.enforce_source, mode=opts.mode,
            vnetd=bool(opts.vnetd and services.vnetd_available()),
            metricsPort=METRICS_PORT if opts.metrics else None,
            subnet6=plan.subnet6, gateway6=plan.gateway6,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        try:
            _build(record, plan, opts, progress)
        except BaseException:
            progress("fabric up failed: removing what was built")
            _teardown(opts.name, _quiet)
            raise
        return record


def _build(record: FabricRecord, plan: AddressPlan, opts: FabricOptions, progress: Progress) -> None:
    os.makedirs(record.directory, mode=0o755, exist_ok=True)
    bin_dir = os.path.join(record.directory, "bin")
    kernel.require_br_netfilter()
    progress("installing the CNI binaries")
    services.install_cni_binaries(bin_dir)

    progress(f"fabric namespace {record.fabricNetns}: bridge {record.fabricBridge}, gateway {record.gateway}")
    fab = record.fabricNetns
    kernel.netns_add(fab)
    kernel.ip(fab, "link", "add", record.fabricBridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
    kernel.ip(fab, "addr", "add", f"{record.gateway}/{plan.prefixlen}", "dev", record.fabricBridge)
    if record.subnet6:
        progress(f"dual-stack: IPv6 subnet {record.subnet6}, gateway {record.gateway6}")
        kernel.ip(fab, "addr", "add", f"{record.gateway6}/{plan.prefixlen6}", "dev", record.fabricBridge, "nodad")
    kernel.ip(fab, "link", "set", record.fabricBridge, "up")
    if record.mode == sdn.MODE_TRANSPARENT:
        progress("transparent mode: the fabric routes every secondary address to its node (the SDN)")
        sdn.configure_fabric(record)

    for addrs in plan.nodes:
        node = _node_record(record, addrs, bin_dir)
        progress(f"node {node.name}: {node.netns}, eth0 {node.primary} ({node.mac}), "
                 f"{len(node.secondaries)} secondary addresses")
        _build_node(record, node, plan, opts)
        record.nodes.append(node)

    progress("waiting for every node's metadata service to answer")
    for node in record.nodes:
        log = os.path.join(record.directory, node.name, "metadata.log")
        services.wait_metadata(node.netns, node.metadataUrl, node.metadataPid,
                               node.mac.replace(":", "").upper().encode(), log)
    if record.vnetd:
        progress("starting vnetd on every node" + (f", metrics on port {METRICS_PORT}" if record.metricsPort else ""))
        for node in record.nodes:
            node.vnetdPid = _start_vnetd(record, node)
        for node in record.nodes:
            services.wait_vnetd(node.vnetdPid, NodeLayout(node.stateDir).socket,
                                os.path.join(record.directory, node.name, "vnetd.log"))

    progress("fabric accounting" + (" and source-address enforcement" if record.enforceSource else ""))
    enforcement.install(record)
    if record.mode == sdn.MODE_TRANSPARENT:
        sdn.install(record)
    record.complete = True
    model.save(record)


def _start_vnetd(record: FabricRecord, node: NodeRecord) -> int:
    log = os.path.join(record.directory, node.name, "vnetd.log")
    extra = ["--metrics-port", str(record.metricsPort), "--metrics-address", "0.0.0.0"] if record.metricsPort else []
    return services.start_vnetd(node.netns, node.stateDir, log, extra)


def _start_metadata(record: FabricRecord, node: NodeRecord) -> int:
    return services.start_metadata(node.netns, naming.METADATA_PORT, node.metadataFile,
                                   os.path.join(record.directory, node.name, "metadata.log"))


def _node_record(record: FabricRecord, addrs: NodeAddresses, bin_dir: str) -> NodeRecord:
    name = naming.node_name(addrs.index)
    node_dir = os.path.join(record.directory, name)
    return NodeRecord(
        name=name, netns=naming.node_netns(record.name, name), primary=addrs.primary, mac=addrs.mac,
        fabricPort=naming.fabric_port(name), stateDir=os.path.join(node_dir, "state"),
        conflist=os.path.join(naming.node_cni_conf_dir(naming.node_netns(record.name, name)), CONFLIST_NAME),
        cniBinDir=bin_dir,
        metadataUrl=naming.metadata_url(), metadataFile=os.path.join(node_dir, "interfaces.xml"),
        secondaries=list(addrs.secondaries),
        bridge="" if record.mode == sdn.MODE_TRANSPARENT else naming.NODE_BRIDGE,
        primary6=addrs.primary6, secondaries6=list(addrs.secondaries6),
    )


def _build_node(record: FabricRecord, node: NodeRecord, plan: AddressPlan, opts: FabricOptions) -> None:
    node_dir = os.path.dirname(node.stateDir)
    os.makedirs(node.stateDir, mode=0o755, exist_ok=True)
    ipv6 = (record.subnet6, node.primary6, node.secondaries6) if record.subnet6 else None
    with open(node.metadataFile, "wb") as f:
        f.write(render_node(node.mac, record.subnet, node.primary, node.secondaries, ipv6=ipv6))
    _ensure_etc_cni()
    os.makedirs(os.path.dirname(node.conflist), mode=0o755, exist_ok=True)
    with open(node.conflist, "w", encoding="utf-8") as f:
        json.dump(conflist_for(node, opts.reuse_cooldown, record.mode), f, indent=2)
        f.write("\n")

    kernel.netns_add(node.netns)
    # The veth is born between the two namespaces: no end of it ever exists in the root namespace.
    kernel.ip(record.fabricNetns, "link", "add", node.fabricPort, "type", "veth",
              "peer", "name", node.eth0, "netns", node.netns)
    kernel.ip(record.fabricNetns, "link", "set", node.fabricPort, "master", record.fabricBridge, "up")
    kernel.ip(node.netns, "link", "set", node.eth0, "address", node.mac, "up")
    kernel.ip(node.netns, "addr", "add", f"{node.primary}/{plan.prefixlen}", "dev", node.eth0)
    kernel.ip(node.netns, "route", "add", "default", "via", record.gateway, "dev", node.eth0)
    if record.subnet6:
        kernel.ip(node.netns, "addr", "add", f"{node.primary6}/{plan.prefixlen6}", "dev", node.eth0, "nodad")
        kernel.ip(node.netns, "-6", "route", "add", "default", "via", record.gateway6, "dev", node.eth0)
    kernel.configure_as_kubernetes_node(node.netns)
    if record.mode == sdn.MODE_TRANSPARENT:
        sdn.configure_node(node)
    node.metadataPid = _start_metadata(record, node)


def _ensure_etc_cni() -> None:
    """`ip netns exec` can only mount the node's cni/ over an existing /etc/cni (what a CNI
    install creates on any node); an empty one is made when the machine has none."""
    if not os.path.isdir("/etc/cni"):
        os.makedirs("/etc/cni", mode=0o755, exist_ok=True)


def _remove_node_etc(netns: str) -> bool:
    """Remove the node's /etc/netns/<netns>/cni/net.d/10-vnet.conflist and the directories up to
    /etc/netns/<netns> when nothing else is in them; True when something was removed."""
    conf_dir = naming.node_cni_conf_dir(netns)
    removed = False
    try:
        os.unlink(os.path.join(conf_dir, CONFLIST_NAME))
        removed = True
    except FileNotFoundError:
        pass
    for d in (conf_dir, os.path.dirname(conf_dir), os.path.join(naming.NETNS_ETC, netns)):
        try:
            os.rmdir(d)
            removed = True
        except OSError:
            break  # absent, or holds what someone else put there
    return removed


def _owned_etc(name: str) -> list[str]:
    """Node namespaces of this fabric that still have an /etc/netns entry of ours."""
    pattern = naming.owned_netns_pattern(name)
    try:
        entries = os.listdir(naming.NETNS_ETC)
    except OSError:
        return []
    return sorted(e for e in entries if pattern.match(e) and
                  os.path.exists(os.path.join(naming.node_cni_conf_dir(e), CONFLIST_NAME)))


# --- health, leftovers, down ---------------------------------------------------------------
class FabricUp(SimError):
    """`fabric up` over a fabric of that name that exists: refused, it would delete its pods."""

    def __init__(self, rec: FabricRecord) -> None:
        from . import health, pods

        n = len(pods.list_pods(rec))
        state = "up" if health.is_whole(rec) else "up but degraded"
        super().__init__(f"fabric {rec.name!r} is already {state} ({len(rec.nodes)} nodes, {n} pods); "
                         f"rebuilding it would delete its pods")
        self.hint = (f"`vnetctl fabric repair --fabric {rec.name}` restarts what is down and keeps the pods; "
                     f"`vnetctl fabric up --fabric {rec.name} --replace` rebuilds it from scratch")


def _existing(name: str) -> FabricRecord | None:
    """The record of a finished `fabric up` of that name whose fabric namespace still exists."""
    try:
        rec = model.load(name)
    except LookupError:
        return None
    return rec if rec.complete and kernel.netns_exists(rec.fabricNetns) else None


def is_healthy(name: str) -> bool:
    """The fabric is up and whole (see record_is_healthy); False when it has no readable record."""
    try:
        rec = model.load(name)
    except LookupError:
        return False
    return record_is_healthy(rec)


def record_is_healthy(rec: FabricRecord) -> bool:
    """Recorded as complete, every namespace present, every node's metadata service answering and
    its vnetd listening (what answers, not the pids recorded at start)."""
    from . import health

    return health.is_whole(rec)


def repair(name: str, progress: Progress = _quiet) -> dict:
    """Restart what is down on a fabric (metadata services, vnetd) without touching its pods;
    {"restarted": [...], "unrepairable": [...]} (a node whose namespace is gone needs --replace)."""
    from . import health

    naming.check_fabric_name(name)
    with fabric_lock():
        rec = model.load(name)
        problems, nodes = health.fabric_health(rec)
        out = {"restarted": [], "unrepairable": list(problems)}
        if problems:
            return out
        for node, h in zip(rec.nodes, nodes):
            if not h.netns.ok:
                out["unrepairable"].append(f"{node.name}: {h.netns.detail}")
                continue
            if not h.metadata.ok:
                progress(f"{node.name}: restarting the metadata service ({h.metadata.detail})")
                if node.metadataPid and processes.in_netns(node.metadataPid, node.netns):
                    processes.stop(node.metadataPid)
                node.metadataPid = _start_metadata(rec, node)
                services.wait_metadata(node.netns, node.metadataUrl, node.metadataPid,
                                       node.mac.replace(":", "").upper().encode(),
                                       os.path.join(rec.directory, node.name, "metadata.log"))
                out["restarted"].append(f"{node.name}: metadata service (pid {node.metadataPid})")
            if h.vnetd is not None and not h.vnetd.ok:
                progress(f"{node.name}: restarting vnetd ({h.vnetd.detail})")
                if node.vnetdPid and processes.in_netns(node.vnetdPid, node.netns):
                    processes.stop(node.vnetdPid)
                node.vnetdPid = _start_vnetd(rec, node)
                services.wait_vnetd(node.vnetdPid, health.vnetd_socket(node),
                                    os.path.join(rec.directory, node.name, "vnetd.log"))
                out["restarted"].append(f"{node.name}: vnetd (pid {node.vnetdPid})")
        if out["restarted"]:
            model.save(rec)
        return out


def owned_namespaces(name: str) -> list[str]:
    """This fabric's namespaces, found by name: pods first, then nodes, the fabric last."""
    pattern = naming.owned_netns_pattern(name)
    roles = {"pod": 0, "node": 1, "fabric": 2}
    found = []
    for ns in kernel.netns_list():
        m = pattern.match(ns)
        if m:
            found.append((roles[m.group(1).split("-")[0].rstrip("0123456789")], ns))
    return [ns for _, ns in sorted(found)]


def _leftovers(name: str) -> bool:
    return bool(owned_namespaces(name)) or os.path.exists(naming.fabric_dir(name)) or bool(_owned_etc(name))


def down(name: str, progress: Progress = _quiet) -> dict:
    """Remove everything of the fabric (also what a crashed run left); what was removed."""
    naming.check_fabric_name(name)
    with fabric_lock():
        return _teardown(name, progress)


def _teardown(name: str, progress: Progress) -> dict:
    removed = {"processes": 0, "namespaces": 0, "stateDir": False}
    try:
        rec: FabricRecord | None = model.load(name)
    except LookupError:
        rec = None
    if rec is not None:
        for n in rec.nodes:
            for pid, arg in ((n.vnetdPid, n.stateDir), (n.metadataPid, n.metadataFile)):
                if pid and (processes.in_netns(pid, n.netns) or processes.mentions(pid, arg)):
                    progress(f"stopping pid {pid} on {n.name}")
                    processes.stop(pid)
                    removed["processes"] += 1
    for ns in owned_namespaces(name):
        stopped = processes.kill_all_in(ns)
        if stopped:
            progress(f"stopped {len(stopped)} process(es) left in {ns}")
            removed["processes"] += len(stopped)
        progress(f"deleting namespace {ns}")
        kernel.netns_del(ns)
        removed["namespaces"] += 1
    for ns in _owned_etc(name):
        progress(f"removing {os.path.join(naming.NETNS_ETC, ns)}")
        _remove_node_etc(ns)
    directory = naming.fabric_dir(name)
    if os.path.isdir(directory):
        progress(f"removing {directory}")
        shutil.rmtree(directory, ignore_errors=True)
        removed["stateDir"] = True
    return removed
