"""The netlink dataplane: bridge, veth pairs, addresses and routes.

The pod end of each veth is created directly inside the pod's namespace (one netlink request,
no move), and the pod side is configured through a netlink socket opened inside that namespace
by this thread (setns). The per-pod work, and the look that finds a bridge already set up, go
through the light channel in rtnl.py (no pyroute2 import: a plugin run without vnetd pays for
every import on every call); the cold paths (bridge and uplink set-up, inspection for CHECK)
through pyroute2's IPRoute, imported when first needed. Sockets are per thread, so vnetd serves
several pods at once.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import _socket as socket  # socket.py minus its enums and selectors (~2.5 ms of plugin start-up)
import sys
import threading
TYPE_CHECKING = False  # typing itself is not imported at run time (plugin start-up cost)

from ..cni import deadline
from ..cni.errors import CNIError, DATAPLANE_FAILURE
from . import netns as nsutil
from . import nlmsg, node_frames
from .model import BridgeInfo, HostView, LinkExists, PodLink, PodLinkSpec, PodView
from .nlmsg import NetlinkError
from .rtnl import NUD_PERMANENT, RtnlChannel

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from .prereqs import NodeFacts

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def _netlink_errors() -> tuple[type[Exception], ...]:
    """What a refused netlink request raises: ours (rtnl.py), and pyroute2's once a cold path
    loaded it (an `except` evaluates this only when something is raised)."""
    loaded = sys.modules.get("pyroute2.netlink.exceptions")
    return (NetlinkError, loaded.NetlinkError) if loaded is not None else (NetlinkError,)


def _fail(what: str, exc: Exception) -> CNIError:
    return CNIError(DATAPLANE_FAILURE, f"{what}: {exc}")


def _local_mac() -> str:
    """A random locally administered unicast MAC (for a bridge that must keep its address)."""
    return _local_macs(1)[0]


def _local_macs(count: int) -> list[str]:
    """`count` random locally administered unicast MACs, from one read of the random source."""
    b = bytearray(os.urandom(6 * count))
    macs = []
    for i in range(0, 6 * count, 6):
        b[i] = (b[i] & 0xFE) | 0x02
        macs.append(":".join(f"{x:02x}" for x in b[i:i + 6]))
    return macs


class LinuxDataplane:
    def __init__(self, lock_dir: str) -> None:
        self._local = threading.local()
        self._lock_dir = lock_dir
        self._bridges: dict[tuple[str, str, str], BridgeInfo] = {}
        self._mtus: dict[str, int] = {}

    # --- sockets -------------------------------------------------------------------------
    @property
    def ipr(self) -> IPRoute:
        """This thread's netlink socket in the namespace the process runs in (the node)."""
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            from pyroute2 import IPRoute  # the cold paths only

            ipr = self._local.ipr = IPRoute()
        return ipr

    def _channel(self) -> RtnlChannel:
        """This thread's light rtnetlink channel in the node's namespace (the hot path)."""
        ch = getattr(self._local, "rtnl", None)
        if ch is None:
            ch = self._local.rtnl = RtnlChannel()
        return ch

    @contextlib.contextmanager
    def _in_netns(self, path: str):
        from pyroute2 import IPRoute  # CHECK's inspection only

        with nsutil.entered(path):
            ipr = IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()

    def close(self) -> None:
        """Close the calling thread's sockets."""
        for name in ("ipr", "rtnl"):
            sock = getattr(self._local, name, None)
            if sock is not None:
                sock.close()
                setattr(self._local, name, None)

    @staticmethod
    def _index(ipr: IPRoute, name: str) -> int | None:
        try:
            return ipr.link("get", ifname=name)[0]["index"]
        except _netlink_errors() as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    # --- bridge --------------------------------------------------------------------------
    def _bridge_lock(self, name: str):
        """Node-wide: one process at a time sets the bridge up (a deadline, then code 11)."""
        from ..state.locks import flocked

        return flocked(os.path.join(self._lock_dir, f"bridge-{name}.lock"), purpose=f"setting up bridge {name}")

    def ensure_bridge(self, name: str, mtu: int, uplink: str = "", gateway: str = "") -> BridgeInfo:
        """Idempotent, and cheap when warm: a bridge this process already set up (same uplink
        and gateway) is not looked at again; if it disappears, the next veth creation fails,
        forgets it, and the ADD after that sets it up anew."""
        key = (name, uplink, gateway)
        known = self._bridges.get(key)
        if known is not None:
            return known
        try:
            info = self._bridge_ready(name, uplink, gateway)
            if info is None:
                with self._bridge_lock(name):
                    # Calls that queued here while another set the bridge up (a node's first
                    # pods, at once) find it finished with the light look, not each with pyroute2.
                    info = self._bridge_ready(name, uplink, gateway) or \
                        self._ensure_bridge_locked(name, mtu, uplink, gateway)
        except _netlink_errors() as exc:
            raise _fail(f"cannot set up bridge {name}", exc) from None
        self._bridges[key] = info
        return info

    def _bridge_ready(self, name: str, uplink: str, gateway: str) -> BridgeInfo | None:
        """The bridge when an earlier call finished setting it up (every ADD of a process that
        runs once, i.e. without vnetd): a few light requests, no lock, no pyroute2. It checks
        what the set-up ends with, so a set-up still under way elsewhere is never taken for
        done: up, br_netfilter's flag on, multicast snooping off; with an uplink: enslaved, its global addresses moved
        (the last step of adoption) and the node's frames routed (node_frames.py); otherwise
        the gateway address on the bridge. None: set it up (under the node-wide lock)."""
        ch = self._channel()
        bridge = ch.link(name)
        if bridge is None or bridge.kind != "bridge" or not bridge.up:
            return None
        options = bridge.info_data()
        if (not nlmsg.uint(options.get(nlmsg.IFLA_BR_NF_CALL_IPTABLES))
                or nlmsg.uint(options.get(nlmsg.IFLA_BR_MCAST_SNOOPING))):  # absent: a kernel without snooping
            return None
        if uplink:
            up = ch.link(uplink)
            if up is None or up.master != bridge.index:
                return None
            if any(a.index == up.index and a.scope == 0 for a in ch.addresses()):
                return None
            if node_frames.installed(up.index) != [bridge.index]:
                return None
        elif gateway:
            iface = ipaddress.ip_interface(gateway)
            if not any(a.index == bridge.index and a.address == str(iface.ip) and a.prefixlen == iface.network.prefixlen
                       for a in ch.addresses(_AF[iface.version])):
                return None
        return BridgeInfo(name, bridge.mac, bridge.index)

    def _ensure_bridge_locked(self, name: str, mtu: int, uplink: str, gateway: str) -> BridgeInfo:
        if not uplink:
            return self._ensure_plain_bridge(name, mtu, gateway)
        ipr = self.ipr
        up_idx = None
        if uplink:
            up_idx = self._index(ipr, uplink)
            if up_idx is None:
                raise CNIError(DATAPLANE_FAILURE, f"uplink interface {uplink!r} does not exist on this node")
        idx = self._index(ipr, name)
        if idx is None:
            # A fixed MAC: a bridge otherwise takes its lowest port's MAC, which changes as pods
            # come and go and leaves stale gateway entries in every pod's ARP cache.
            mac = ipr.get_links(up_idx)[0].get_attr("IFLA_ADDRESS") if up_idx else _local_mac()
            try:
                ipr.link("add", ifname=name, kind="bridge", address=mac, mtu=mtu)
            except _netlink_errors() as exc:
                if exc.code != errno.EEXIST:
                    raise
            idx = self._index(ipr, name)
        # The bridge's own switch for br_netfilter (OR-ed with net.bridge.bridge-nf-call-iptables):
        # kube-proxy's rules see pod traffic on this bridge whatever the node-wide sysctl says,
        # and no other bridge on the node is affected. It needs br_netfilter loaded (STATUS says so).
        # Multicast snooping off: with it on, each port coming or going re-arms two query timers
        # on every port of the bridge (br_port_state_selection), so every pod's ADD and DEL cost
        # grew with the number of pods (225 ports: ~0.3 ms of kernel time per ADD+DEL, and O(N^2)
        # timers while a node fills). Without a multicast querier on the segment (a cloud VNet
        # has none) a snooping bridge floods all multicast to every port anyway, so what pods and
        # the VNet see does not change; with snooping off it is always so, and nothing is pruned.
        ipr.link("set", index=idx, kind="bridge", br_nf_call_iptables=1, br_mcast_snooping=0)
        ipr.link("set", index=idx, state="up")
        if up_idx is not None:
            self._adopt_uplink(idx, up_idx)
            node_frames.ensure(up_idx, idx, ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))
        elif gateway:
            iface = ipaddress.ip_interface(gateway)
            nodad = {"flags": 0x02} if iface.version == 6 else {}  # IFA_F_NODAD: the gateway answers at once
            with contextlib.suppress(*_netlink_errors()):  # EEXIST: already there
                ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen, **nodad)
        link = ipr.get_links(idx)[0]
        return BridgeInfo(name, link.get_attr("IFLA_ADDRESS"), idx)

    def _ensure_plain_bridge(self, name: str, mtu: int, gateway: str) -> BridgeInfo:
        """A bridge without an uplink (with the gateway address, when given), set up through the
        light channel: a node's first ADD without vnetd does not import pyroute2 for it (~200 ms
        of CPU). Only adopting an uplink needs pyroute2."""
        ch = self._channel()
        idx = ch.link_index(name)
        if idx is None:
            # A fixed MAC: a bridge otherwise takes its lowest port's MAC, which changes as pods
            # come and go and leaves stale gateway entries in every pod's ARP cache.
            try:
                ch.add_bridge(name, mtu, _local_mac())
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            idx = ch.link_index(name)
            if idx is None:
                raise CNIError(DATAPLANE_FAILURE, f"bridge {name} vanished while it was set up")
        # br_netfilter's switch of this bridge only, snooping off (see _ensure_bridge_locked), then up.
        ch.set_bridge_settings(idx)
        ch.set_up(idx)
        if gateway:
            try:
                ch.add_address(idx, gateway)  # an IPv6 gateway without DAD: it answers at once
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # already there
                    raise
        link = ch.link_at(idx)
        if link is None:
            raise CNIError(DATAPLANE_FAILURE, f"bridge {name} vanished while it was set up")
        return BridgeInfo(name, link.mac, idx)

    def _adopt_uplink(self, br_idx: int, up_idx: int) -> None:
        """Enslave the uplink; the bridge takes over its addresses and the routes through it.

        Ordered so that a crash (or an error) between any two steps leaves the node with its
        address, and a later call finishes the job from wherever it stopped:
        1. enslave the uplink (it still holds its addresses);
        2. add each address to the bridge (both hold it for a moment);
        3. move each gateway route to the bridge (`replace`: one atomic switch per route);
        4. only then remove the addresses from the uplink.
        Every error is raised (an address already on the bridge is the only one expected)."""
        ipr = self.ipr
        link = ipr.get_links(up_idx)[0]
        if link.get_attr("IFLA_MASTER") != br_idx:
            ipr.link("set", index=up_idx, master=br_idx, state="up")
        addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"], a["family"])
                 for a in ipr.get_addr(index=up_idx)
                 if a["scope"] == 0]  # global scope only; link-local stays with the link
        if not addrs:
            return  # adopted already (or an uplink without addresses)
        routes = []
        for fam in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=fam, table=254):
                if r.get_attr("RTA_OIF") == up_idx and r.get_attr("RTA_GATEWAY"):
                    routes.append((fam, r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_GATEWAY"),
                                   r.get_attr("RTA_PRIORITY")))
        for addr, plen, fam in addrs:
            try:
                ipr.addr("add", index=br_idx, address=addr, prefixlen=plen)
            except _netlink_errors() as exc:
                if exc.code != errno.EEXIST:
                    raise
        for fam, dst, dlen, gw, prio in routes:
            kw = {"dst": f"{dst or ('0.0.0.0' if fam == socket.AF_INET else '::')}/{dlen}",
                  "gateway": gw, "oif": br_idx, "family": fam}
            if prio is not None:
                kw["priority"] = prio
            ipr.route("replace", **kw)
        for addr, plen, fam in addrs:
            try:
                ipr.addr("del", index=up_idx, address=addr, prefixlen=plen)
            except _netlink_errors() as exc:
                if exc.code != errno.EADDRNOTAVAIL:  # gone already
                    raise

    # --- pods ----------------------------------------------------------------------------
    def uplink_mtu(self, uplink: str) -> int:
        """The uplink's MTU, looked up once per process (an MTU change on the node's NIC is a
        node reconfiguration: restart vnetd)."""
        mtu = self._mtus.get(uplink)
        if mtu is None:
            try:
                link = self._channel().link(uplink)
            except NetlinkError as exc:
                raise _fail(f"cannot read uplink {uplink}", exc) from None
            if link is None:
                raise CNIError(DATAPLANE_FAILURE, f"uplink interface {uplink!r} does not exist on this node")
            mtu = self._mtus[uplink] = link.mtu
        return mtu

    def _bridge_index(self, name: str) -> int | None:
        for (bridge, _, _), info in self._bridges.items():
            if bridge == name:
                return info.index
        return self._channel().link_index(name)

    def create_pod_link(self, spec: PodLinkSpec) -> PodLink:
        """One netlink request creates the pair with the pod end inside the pod's namespace,
        the host end up (on the bridge, in bridge mode), both MACs chosen here (no read-back
        needed); routed: then the node's routes to the pod's addresses through the host end."""
        br_idx = None
        if not spec.routed:
            br_idx = self._bridge_index(spec.bridge)
            if br_idx is None:
                self._bridges.clear()
                raise CNIError(DATAPLANE_FAILURE, f"bridge {spec.bridge} vanished")
        host_mac, pod_mac = _local_macs(2)
        try:
            fd = nsutil.open_netns(spec.netns)
        except OSError as exc:
            raise CNIError(DATAPLANE_FAILURE, f"cannot open netns {spec.netns}: {exc.strerror}") from None
        ch = self._channel()
        # Bridge mode: the host end's hairpin in the same write, right after the creation (if the
        # creation is refused, an interface of that deterministic name already exists; hairpin on
        # it changes nothing that matters: it is this attachment's leftover, deleted next). Then
        # no IPv6 address of its own (addrgenmode none), set before its carrier comes up (with the
        # pod end, in _configure_pod): a bridge port's frames go to the bridge, never to its own
        # IP stack, so a link-local there only cost each ADD and DEL a share of the node's IPv6
        # routing table that grows with every pod (its fe80:: routes; every veth removal walks
        # the table) and its DAD and router solicitation. The pods' gateway is the bridge or
        # the VNet's, never a port (transparent mode's host end, the pods' gateway there, keeps
        # its link-local).
        requests = [ch.veth_request(spec.host_ifname, spec.ifname, fd, spec.mtu, host_mac, pod_mac, br_idx)]
        if not spec.routed:
            requests += [ch.hairpin_request(spec.host_ifname), ch.no_ipv6_autoconf_request(spec.host_ifname)]
        hairpin_error = None
        try:
            ch.request_all(requests)
        except NetlinkError as exc:
            if getattr(exc, "request", 0) > 0:
                hairpin_error = exc  # the pair exists: undone with the rest below
            elif exc.code == errno.EEXIST:
                raise LinkExists(f"cannot create veth {spec.host_ifname}/{spec.ifname}: an interface "
                                 f"named {spec.host_ifname} on the node or {spec.ifname} in the pod "
                                 "already exists") from None
            else:
                if exc.code in (errno.ENODEV, errno.EINVAL) and not spec.routed:
                    self._bridges.clear()  # the bridge we knew is gone: set it up again next time
                raise _fail(f"cannot create veth {spec.host_ifname}", exc) from None
        finally:
            os.close(fd)
        try:
            if hairpin_error is not None:
                raise hairpin_error
            self._configure_pod(spec, host_mac, pod_mac)
            if spec.routed:
                self._route_to_pod(spec, pod_mac)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.delete_pod_link(spec.host_ifname)
            if isinstance(exc, CNIError):
                raise
            raise _fail(f"cannot configure pod interface {spec.ifname}", exc) from None
        return PodLink(host_mac=host_mac, pod_mac=pod_mac)

    def _configure_pod(self, spec: PodLinkSpec, host_mac: str, pod_mac: str) -> None:
        # A new pod announces its IPv4 addresses (a gratuitous ARP), so that neighbours holding
        # an entry for a reused address (other pods, the node, the VNet side) drop the old
        # pod's MAC at once. The kernel sends it when the link comes up with arp_notify on, from
        # inside that netlink request: the bridge floods it to every port and every pod's
        # namespace processes it before the request returns (0.25-1 ms of CPU with 250 pods on
        # the node, under the rtnl lock). vnetd leaves it until after the ADD's answer
        # (cni/deadline.py; its after-answer queue sends it soon after, once ADDs pause for a
        # moment, within 250 ms: daemon/afteranswer.py): the
        # link comes up before its addresses are added (the kernel announces only the
        # addresses a link has when it comes up, so nothing then), and once the answer is out
        # the link is given the MAC it has (nlmsg.same_address), on which the kernel sends the
        # very announcement it sends at link up. arp_notify stays on for the link's later life.
        # Bridge mode only: a routed pod's announcement reaches its host end alone (nothing
        # floods it), and that request would also flush the pod's pinned gateway entries.
        later = (not spec.routed and any(":" not in cidr for cidr in spec.addresses)
                 and deadline.can_defer())
        with nsutil.entered(spec.netns):
            pod = RtnlChannel()
        kept = False
        try:
            idx = self._configure_pod_link(pod, spec, host_mac, up_first=later)
            if later:
                def announce() -> None:
                    # Done soon after the answer, no lock held: only while the pod's link is still
                    # the one made here (same index and MAC; a pod deleted meanwhile, or its link
                    # replaced, has nothing of this ADD's to announce).
                    with pod:
                        try:
                            link = pod.link(spec.ifname)
                            if link is None or link.index != idx or link.mac != pod_mac:
                                return
                            pod.request_all([pod.announce_request(idx, pod_mac)])
                        except NetlinkError as exc:
                            if exc.code == errno.ENODEV:
                                return  # gone between the look and the request
                            raise OSError(exc.code, f"the pod's gratuitous ARP ({spec.ifname} in {spec.netns}) "
                                                    f"was not sent: {os.strerror(exc.code)}") from None

                kept = deadline.after_answer(announce, pod.close)
        finally:
            if not kept:
                pod.close()

    @staticmethod
    def _configure_pod_link(pod: RtnlChannel, spec: PodLinkSpec, host_mac: str, up_first: bool) -> int:
        """The pod's link configured in one write; returns its index."""
        idx = pod.link_index(spec.ifname)
        if idx is None:
            raise CNIError(DATAPLANE_FAILURE, f"{spec.ifname} vanished from {spec.netns}")
        # One write, processed by the kernel in this order, then every answer read: arp_notify
        # on (the link announces its addresses whenever it comes up); a pod given no IPv6
        # address gets none of its own either (addrgenmode none: no link-local, so none of the
        # IPv6 chatter that follows a link-local's birth, its DAD probe, MLD reports and router
        # solicitations, which the bridge floods to every port and every pod's namespace
        # processes, partly in kernel workers holding the rtnl lock that the next ADD waits
        # for); the addresses, then the link up (it announces them), or the other way round
        # when up_first (no announcement: the caller has it made later); the pinned gateways,
        # the routes (one already there, e.g. the subnet's own, is fine).
        ipv6 = any(":" in cidr for cidr in spec.addresses)
        up = [pod.up_request(idx)]
        addresses = [pod.address_request(idx, cidr) for cidr in spec.addresses]
        pod.request_all([pod.arp_notify_request(idx),
                         *(() if ipv6 else (pod.no_ipv6_autoconf_request(spec.ifname),)),
                         *(up + addresses if up_first else addresses + up),
                         *(pod.neighbour_request(idx, gateway, host_mac) for gateway in spec.host_gateways),
                         *(pod.route_request(idx, dst, gw, tolerate=(errno.EEXIST,))
                           for dst, gw in spec.routes)])
        return idx

    def _route_to_pod(self, spec: PodLinkSpec, pod_mac: str) -> None:
        """Routed mode: the node reaches each pod address through the host end (scope link).
        An IPv6 address is also pinned to the pod's MAC: neighbour discovery from the host end
        would need its link-local address, which is tentative (DAD) for its first second."""
        ch = self._channel()
        idx = ch.link_index(spec.host_ifname)
        if idx is None:
            raise CNIError(DATAPLANE_FAILURE, f"{spec.host_ifname} vanished from the node")
        for cidr in spec.addresses:
            ip = ipaddress.ip_interface(cidr).ip
            ch.add_route(idx, f"{ip}/{ip.max_prefixlen}")
            if ip.version == 6:
                ch.add_neighbour(idx, str(ip), pod_mac)

    def begin_delete_pod_link(self, host_ifname: str):
        """Start removing the pair on a helper thread and return a wait() -> bool: the kernel's
        teardown of a veth (~20 ms, mostly RCU grace periods) then overlaps the caller's own
        work that does not depend on the veth being gone (e.g. loading the IPAM; an address is
        released only after wait()). wait() raises what the deletion raised. A plain thread
        per call: concurrent.futures would cost a plugin run without vnetd ~6 ms of imports
        (logging, traceback, queue), more than the thread it saves."""
        outcome: list = []

        def work() -> None:
            try:
                outcome.append((True, self.delete_pod_link(host_ifname)))
            except BaseException as exc:
                outcome.append((False, exc))
            finally:
                self.close()  # this thread's netlink channel ends with it

        helper = threading.Thread(target=work, name="vnet-del", daemon=True)
        helper.start()

        def wait() -> bool:
            helper.join()
            ok, value = outcome[0]
            if not ok:
                raise value
            return value

        return wait

    def delete_pod_link(self, host_ifname: str) -> bool:
        try:
            return self._channel().delete_link(host_ifname)
        except NetlinkError as exc:
            raise _fail(f"cannot delete {host_ifname}", exc) from None

    def delete_pod_links(self, host_ifnames: list[str]) -> list[str]:
        """Remove many pairs at once: each host end is put in a link group of its own (a fresh
        random number: no other link is in it), then the group is deleted in one request, so
        the kernel pays one RCU grace period for the batch instead of one per veth. Returns the
        names that existed (and are gone now)."""
        ch = self._channel()
        group = 0x10000000 + int.from_bytes(os.urandom(4), "little") % 0x6FFFFFFF
        try:
            tagged = [name for name in host_ifnames if ch.set_group(name, group)]
            if tagged:
                ch.delete_group(group)
        except NetlinkError as exc:
            raise _fail(f"cannot delete {len(host_ifnames)} veth(s) as link group {group}", exc) from None
        return tagged

    def inspect_pod(self, netns: str, ifname: str) -> PodView:
        if nsutil.netns_missing(netns):
            return PodView(exists=False)
        with self._in_netns(netns) as pr:
            idx = self._index(pr, ifname)
            if idx is None:
                return PodView(exists=False)
            link = pr.get_links(idx)[0]
            addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in pr.get_addr(index=idx)
                     if a["scope"] == 0]
            routes = []
            for fam in (socket.AF_INET, socket.AF_INET6):
                for r in pr.get_routes(family=fam, table=254):
                    if r.get_attr("RTA_OIF") != idx:
                        continue
                    dst = r.get_attr("RTA_DST") or ("0.0.0.0" if fam == socket.AF_INET else "::")
                    routes.append((f"{dst}/{r['dst_len']}", r.get_attr("RTA_GATEWAY") or ""))
            neighbours = {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
                          for fam in (socket.AF_INET, socket.AF_INET6)
                          for n in pr.get_neighbours(family=fam, ifindex=idx)
                          if n["state"] & NUD_PERMANENT}
            return PodView(exists=True, mac=link.get_attr("IFLA_ADDRESS"), up=bool(link["flags"] & 1),
                           mtu=link.get_attr("IFLA_MTU"), addresses=addrs, routes=routes,
                           neighbours=neighbours)

    def node_facts(self, bridge: str) -> NodeFacts:
        """What the node's settings are for Services over the bridge (prereqs.py judges them)."""
        from .prereqs import NodeFacts

        call = _sysctl("net/bridge/bridge-nf-call-iptables")
        link = self._channel().link(bridge) if bridge else None
        flag = bool(link is not None and nlmsg.uint(link.info_data().get(nlmsg.IFLA_BR_NF_CALL_IPTABLES)))
        return NodeFacts(br_netfilter=os.path.isdir("/proc/sys/net/bridge"), bridge_nf_call_iptables=call,
                         ip_forward=_sysctl("net/ipv4/ip_forward") or 0, bridge=bridge,
                         bridge_exists=link is not None, bridge_nf_flag=flag)

    def inspect_host(self, host_ifname: str) -> HostView:
        idx = self._index(self.ipr, host_ifname)
        if idx is None:
            return HostView(exists=False)
        link = self.ipr.get_links(idx)[0]
        master_idx = link.get_attr("IFLA_MASTER")
        master = ""
        if master_idx:
            master = self.ipr.get_links(master_idx)[0].get_attr("IFLA_IFNAME")
        routes = [f"{r.get_attr('RTA_DST') or ('0.0.0.0' if fam == socket.AF_INET else '::')}/{r['dst_len']}"
                  for fam in (socket.AF_INET, socket.AF_INET6)
                  for r in self.ipr.get_routes(family=fam, table=254, oif=idx)
                  if r.get_attr("RTA_OIF") == idx]
        hairpin = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BRPORT_MODE")
        neighbours = {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
                      for n in self.ipr.get_neighbours(family=socket.AF_INET6, ifindex=idx)
                      if n["state"] & NUD_PERMANENT}
        return HostView(exists=True, master=master, up=bool(link["flags"] & 1),
                        mac=link.get_attr("IFLA_ADDRESS"), routes=routes, neighbours=neighbours, hairpin=bool(hairpin))


def _sysctl(path: str) -> int | None:
    """An integer under /proc/sys (of this thread's network namespace); None when it is absent."""
    try:
        with open(os.path.join("/proc/sys", path)) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
