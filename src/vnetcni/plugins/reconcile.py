"""Start-up reconciliation: endpoint records whose pod is known to be gone.

After a node reboot (or a DEL that never came) the namespaces and veths are gone but the state
files are not. A record is pruned only on positive evidence that its pod is gone, never because
a path cannot be seen from where we run (a container, `kubectl debug node`, another mount
namespace: there every pod would look gone). The evidence is one of:
- the node rebooted since the pod was attached (the record's kernel boot ID is not this boot's):
  no namespace or veth survives a reboot;
- the record's host veth does not exist in this network namespace, which is the node's (the
  record's bridge is here; in transparent mode: another pod's veth is), so no pod holds the address in the kernel any more (a veth's two ends
  die together), AND its netns is verified gone from the host's point of view: through PID 1's
  root (/proc/1/root, the host's mount namespace, when we run in the host's PID namespace and
  may read it), or, where that cannot be read, in a netns directory shown to be the runtime's
  own: another pod's namespace is visible in it, or it is a mount that receives the host's
  netns mounts (shared or slave propagation, as `ip netns` and runtimes set it up); a /proc/PID/ns/net path is gone with its
  process when our /proc is the host's PID namespace. Anywhere else (an empty or private
  /run/netns, another PID namespace) nothing can be verified and nothing is pruned.
The runtime's own list of live attachments (CNI GC, `cni.dev/valid-attachments`) is the other
source of evidence; it is handled by the plugin's GC verb, not here.

A pruned record's vnet-ipam allocation is released (with the reuseCooldownSeconds the address
was allocated under) and the record dropped. Run by vnetd at start and by `vnetctl gc`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from dataclasses import dataclass, field

from ..dataplane.netns import _is_nsfs, is_netns
from .endpoints import EndpointRecord, EndpointStore, boot_id

GONE, LIVE, UNKNOWN = "gone", "live", "unknown"
INIT_PID_NS_INO = 0xEFFFFFFC  # PROC_PID_INIT_INO: the inode of the initial (host) PID namespace
_PROC_PID_NETNS = re.compile(r"^/proc/(\d+)/(?:task/\d+/)?ns/net$")


@dataclass
class Stale:
    record: EndpointRecord
    why: str


@dataclass
class Reconciled:
    pruned: list[Stale] = field(default_factory=list)
    kept: int = 0
    unverified: list[Stale] = field(default_factory=list)  # look gone from here, not proven gone
    not_released: list[str] = field(default_factory=list)  # addresses another IPAM must release


class HostView:
    """Whether a pod's netns is gone, from the host's point of view, as far as this process can
    tell. `root` (the host's root: PID 1's) and `pid_ns_inode` are constructor arguments so
    tests can stand in for the host."""

    def __init__(self, root: str = "/proc/1/root", pid_ns_inode: int | None = None) -> None:
        self.root = root
        if pid_ns_inode is None:
            try:
                pid_ns_inode = os.stat("/proc/self/ns/pid").st_ino
            except OSError:
                pid_ns_inode = 0
        self.in_host_pid_ns = pid_ns_inode == INIT_PID_NS_INO
        self.host_root = self.in_host_pid_ns and os.path.isdir(self.root + "/")

    def netns_state(self, path: str, witnessed: set[str] = frozenset()) -> tuple[str, str]:
        """("gone" | "live" | "unknown", how we know): "gone" only when verified.

        `witnessed`: directories in which another pod's namespace is visible from here (so they
        are the runtime's own netns directory, not an empty or stale copy of it)."""
        if not path or not os.path.isabs(path):
            return UNKNOWN, f"netns path {path!r} cannot be checked"
        if is_netns(path):
            return LIVE, f"netns {path} exists"
        m = _PROC_PID_NETNS.match(path)
        if m:  # a process's namespace: gone with the process, if our /proc is the host's PID namespace
            if not self.in_host_pid_ns:
                return UNKNOWN, "not running in the host's PID namespace"
            if os.path.exists(f"/proc/{m.group(1)}"):
                return UNKNOWN, f"process {m.group(1)} (or one with its PID) still exists"
            return GONE, f"process {m.group(1)} is gone"
        if self.host_root:  # the host's own mount namespace, through PID 1's root
            return self._on_host(path)
        directory = os.path.dirname(path)
        if directory in witnessed:
            return GONE, (f"netns {path} does not exist, and {directory} is the runtime's (other pods' "
                          "namespaces are visible in it)")
        if propagated_mount(directory):
            return GONE, (f"netns {path} does not exist, and {directory} receives the host's netns mounts "
                          "(a shared or slave mount)")
        return UNKNOWN, (f"netns {path} is not visible here and nothing shows that {directory} is the "
                         "host's: no other pod's namespace is visible in it, it is not a mount shared "
                         f"with the host, and the host's mount namespace ({self.root}) cannot be read")

    def _on_host(self, path: str) -> tuple[str, str]:
        try:
            fd = os.open(self.root + path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)  # a FIFO cannot hang us
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return GONE, f"netns {path} does not exist on the host"
            return UNKNOWN, f"netns {path} cannot be checked on the host: {exc.strerror}"
        try:
            if _is_nsfs(fd):
                return LIVE, f"netns {path} exists on the host"
            return GONE, f"{path} on the host is no longer a network namespace"
        finally:
            os.close(fd)


def propagated_mount(directory: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether `directory` is a mount point that receives mounts from a peer group (`shared:N`
    or `master:N`): how `ip netns` and runtimes publish netns bind mounts to every mount
    namespace (a container mounting the host's netns directory with HostToContainer propagation
    gets `master:N`). An empty or private copy (a tmpfs in a container) is neither."""
    try:
        target = os.path.realpath(directory)
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    top = None
    for line in lines:  # the last mount on a path is the one on top
        fields = line.split(" ")
        if len(fields) > 5 and fields[4].replace("\\040", " ") == target:
            top = fields
    if top is None:
        return False
    optional = top[6:top.index("-")] if "-" in top else []
    return any(f.startswith(("shared:", "master:")) for f in optional)


def verdict(rec: EndpointRecord, dataplane, host: HostView, this_boot: str,
            witnessed: set[str] = frozenset(), node_here: bool = False) -> tuple[str, str]:
    """("gone" | "live" | "unknown", the evidence) for one record. `node_here`: another record's
    veth or bridge exists here, so this is the node's network namespace."""
    if rec.boot_id and this_boot and rec.boot_id != this_boot:
        return GONE, f"attached before the node rebooted (boot {rec.boot_id[:8]}, now {this_boot[:8]})"
    if dataplane.inspect_host(rec.host_ifname).exists:
        return LIVE, f"veth {rec.host_ifname} exists"
    if not (dataplane.inspect_host(rec.bridge).exists if rec.bridge else node_here):
        where = f"nor is bridge {rec.bridge}" if rec.bridge else "nor is any other pod's veth"
        return UNKNOWN, (f"veth {rec.host_ifname} is not here, {where}: this may not be the node's network "
                         "namespace")
    state, how = host.netns_state(rec.netns, witnessed)
    if state == GONE:
        return GONE, f"veth {rec.host_ifname} is gone and {how}"
    return state, f"veth {rec.host_ifname} is gone but {how}"


def classify(records: dict[str, EndpointRecord], dataplane, host: HostView | None = None,
             this_boot: str | None = None) -> tuple[list[Stale], list[Stale], int]:
    """(records whose pod is gone, records that look gone from here but cannot be verified,
    the number of live ones); each with the evidence."""
    host = host or HostView()
    this_boot = boot_id() if this_boot is None else this_boot
    witnessed = {os.path.dirname(r.netns) for r in records.values() if r.netns and is_netns(r.netns)}
    node_here = any(dataplane.inspect_host(name).exists
                    for name in dict.fromkeys(n for r in records.values() for n in (r.host_ifname, r.bridge) if n))
    stale, unverified, live = [], [], 0
    for rec in records.values():
        state, why = verdict(rec, dataplane, host, this_boot, witnessed, node_here)
        if state == GONE:
            stale.append(Stale(rec, why))
        elif state == UNKNOWN:
            unverified.append(Stale(rec, why))
        else:
            live += 1
    return stale, unverified, live


def reconcile(state_dir: str, dataplane, clock=time.time, dry_run: bool = False,
              host: HostView | None = None, this_boot: str | None = None) -> Reconciled:
    store = EndpointStore(state_dir)
    stale, unverified, live = classify(store.all(), dataplane, host, this_boot)
    out = Reconciled(kept=live + len(unverified), unverified=unverified)
    if dry_run:
        out.pruned = stale
        return out
    for item in stale:
        if _prune(state_dir, store, dataplane, item, clock, out):
            out.pruned.append(item)
        else:
            out.kept += 1
    return out


def _prune(state_dir: str, store: EndpointStore, dataplane, item: Stale, clock, out: Reconciled) -> bool:
    """Prune one stale record unless a call for its attachment is in flight (its lock is held:
    an ADD or DEL is working on it) or it changed since it was judged. True if pruned."""
    from ..node.layout import NodeLayout
    from ..state import attachments

    rec = item.record
    ipam_dir = rec.ipam_state_dir or state_dir  # older records: vnet-ipam beside vnet
    lock_dirs = dict.fromkeys([NodeLayout(state_dir).lock_dir, NodeLayout(ipam_dir).lock_dir])
    with contextlib.ExitStack() as held:
        if not all(held.enter_context(attachments.unless_busy(d, rec.network, rec.container_id, rec.ifname))
                   for d in lock_dirs):
            return False
        if not store.remove_if_same(rec):
            return False  # changed meanwhile (the attachment was added again): not ours to prune
        if not item.why.startswith("attached before"):  # after a reboot the name may be a new pod's
            dataplane.delete_pod_link(rec.host_ifname)  # normally gone with its namespace already
        if rec.vnet_ipam and os.path.exists(os.path.join(ipam_dir, "ipam.json")):
            _release(ipam_dir, rec, clock())
        else:
            out.not_released.extend(rec.ips)
    return True


def _release(ipam_dir: str, rec: EndpointRecord, now: float) -> None:
    release_addresses(ipam_dir, [rec], now)


def release_addresses(ipam_dir: str, records: list[EndpointRecord], now: float) -> None:
    """Release the vnet-ipam allocations these records held, in one write of ipam.json; each
    only if it still holds the record's address, and with the cooldown it was allocated under."""
    from ..ipam.allocator import release
    from ..ipam.config import DEFAULT_COOLDOWN_SECONDS
    from ..ipam.model import allocation_key
    from ..ipam.store import IpamStore

    def change(state):
        for rec in records:
            key = allocation_key(rec.network, rec.container_id, rec.ifname)
            ips = {ip.split("/")[0] for ip in rec.ips}
            # The pod is gone, but stale ARP elsewhere may still point here: the cooldown its
            # address was allocated under applies (older records: the default).
            cooldown = DEFAULT_COOLDOWN_SECONDS if rec.cooldown_seconds is None else rec.cooldown_seconds
            alloc = state.allocations.get(key)
            if alloc is not None and alloc.ip in ips:  # only the address this record held
                release(state, key, now, cooldown)

    IpamStore(ipam_dir).apply(change)
