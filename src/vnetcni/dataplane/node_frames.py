"""Frames for the node itself are routed, not bridged (what makes NodePorts work on every node).

In bridge mode the uplink (eth0) is a port of the node's bridge, and the bridge carries the node's
address and MAC. With br_netfilter, a frame that arrives on eth0 for the node's MAC is handed to
iptables while it is being bridged; when kube-proxy DNATs it (a NodePort, externalTrafficPolicy
Cluster) to a pod on another node, the new destination lies behind eth0 again, and a bridge never
sends a frame back out of the port it came in on: the connection times out. Hairpin on the uplink
port is no fix (the VNet's broadcasts would come back into it).

What a node does instead (the old ebtables "broute" recipe): IPv4 frames that arrive on the uplink
addressed to the node's own MAC skip the bridge and enter the IP stack on the bridge device, so
iptables sees them as routed traffic: PREROUTING DNAT, FORWARD, POSTROUTING MASQUERADE, out through
the bridge like any packet the node sends. Here that is a tc filter on the uplink's ingress
(clsact qdisc, u32 match on the destination MAC, mirred ingress redirect to the bridge); nftables'
`meta broute` needs nft >= 1.0.7 and ebtables-nft has no broute table, while tc u32/mirred work on
every kernel a node runs. ARP and frames for pods (their own MACs) are bridged as before.
Visible with `tc filter show dev eth0 ingress`.

A consequence: the bridge no longer learns the sources of these frames (learning happens in the
bridge's receive path, which they skip). It still learns them from their ARP and broadcasts and
from traffic to pods; until it does, a frame the node sends to such a peer is flooded to the
bridge's ports, as any unknown unicast is.

Requests are plain rtnetlink messages (nlmsg.py's attributes; pyroute2's u32 encoder cannot express the negative offsets
a MAC match needs); this runs on the cold path only, when vnet sets up its bridge.
"""

from __future__ import annotations

import errno
import _socket as socket  # socket.py minus its enums and selectors (~2.5 ms of plugin start-up)
import struct

from .nlmsg import NetlinkError, attr as _attr, attrs as _attrs
from .rtnl import RtnlChannel

RTM_NEWQDISC, RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 36, 44, 45, 46
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
NLA_F_NESTED = 0x8000
TC_H_CLSACT = 0xFFFFFFF1
TC_H_INGRESS = 0xFFFFFFF2  # clsact's ingress hook
ETH_P_IP = 0x0800
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_U32_SEL, TCA_U32_ACT = 5, 7
TCA_ACT_KIND, TCA_ACT_OPTIONS = 1, 2
TCA_MIRRED_PARMS = 2
TC_ACT_STOLEN = 4
TCA_INGRESS_REDIR = 3
TC_U32_TERMINAL = 1
PRIORITY = 0x2A  # the filter's preference on the uplink's ingress; vnet owns it

_TCMSG = struct.Struct("=BxxxiIII")


def _nest(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _tcmsg(ifindex: int, parent: int, handle: int = 0, info: int = 0) -> bytes:
    return _TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, info)


def _filter_info() -> int:
    return (PRIORITY << 16) | socket.htons(ETH_P_IP)


def _redirect_filter(uplink: int, bridge: int, mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", ""))
    hi, lo = struct.unpack(">HI", raw)
    def key(mask: int, value: int, offset: int) -> bytes:  # mask and value in network order
        return struct.pack(">II", mask, value) + struct.pack("=ii", offset, 0)

    # u32 offsets count from the network header; the destination MAC starts 14 bytes before it.
    keys = key(0x0000FFFF, hi, -16) + key(0xFFFFFFFF, lo, -12)
    sel = struct.pack("=BBBxHHhhI", TC_U32_TERMINAL, 0, 2, 0, 0, 0, 0, 0) + keys
    mirred = struct.pack("=IIiiiiI", 0, 0, TC_ACT_STOLEN, 0, 0, TCA_INGRESS_REDIR, bridge)
    action = _nest(1, _attr(TCA_ACT_KIND, b"mirred\0"),
                   _nest(TCA_ACT_OPTIONS, _attr(TCA_MIRRED_PARMS, mirred)))
    return (_tcmsg(uplink, TC_H_INGRESS, info=_filter_info()) + _attr(TCA_KIND, b"u32\0")
            + _nest(TCA_OPTIONS, _attr(TCA_U32_SEL, sel), _nest(TCA_U32_ACT, action)))


def _redirect_target(body: bytes) -> int | None:
    """The ifindex a filter of ours redirects to (None when it is not such a filter)."""
    top = _attrs(body[_TCMSG.size:])
    if top.get(TCA_KIND, b"").rstrip(b"\0") != b"u32" or TCA_OPTIONS not in top:
        return None
    for action in _attrs(_attrs(top[TCA_OPTIONS]).get(TCA_U32_ACT, b"")).values():
        act = _attrs(action)
        if act.get(TCA_ACT_KIND, b"").rstrip(b"\0") == b"mirred":
            parms = _attrs(act.get(TCA_ACT_OPTIONS, b"")).get(TCA_MIRRED_PARMS, b"")
            if len(parms) >= 28:
                return struct.unpack_from("=IIiiiiI", parms)[6]
    return None


def installed(uplink: int) -> list[int]:
    """The bridges (ifindex) our filter on the uplink redirects to; [] when none is there."""
    sock = RtnlChannel()
    try:
        try:
            answer = sock.request_raw(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP,
                                  _tcmsg(uplink, TC_H_INGRESS, info=_filter_info()))
        except NetlinkError as exc:
            if exc.code in (errno.EINVAL, errno.ENOENT):  # no clsact qdisc on the uplink
                return []
            raise
        targets = []
        for _typ, body in answer:
            info = _TCMSG.unpack_from(body)[4]
            target = _redirect_target(body)
            if info >> 16 == PRIORITY and target is not None:
                targets.append(target)
        return targets
    finally:
        sock.close()


def ensure(uplink: int, bridge: int, mac: str) -> None:
    """Idempotent: the uplink's IPv4 frames for `mac` (the node's) enter the IP stack on the bridge.
    Nothing changes when the filter is there already; a stale one (a recreated bridge) is replaced."""
    targets = installed(uplink)
    if targets == [bridge]:
        return
    sock = RtnlChannel()
    try:
        try:
            sock.request_raw(RTM_NEWQDISC, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                         _tcmsg(uplink, TC_H_CLSACT, handle=0xFFFF0000) + _attr(TCA_KIND, b"clsact\0"))
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        if targets:
            sock.request_raw(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK,
                         _tcmsg(uplink, TC_H_INGRESS, info=_filter_info()))
        sock.request_raw(RTM_NEWTFILTER, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                     _redirect_filter(uplink, bridge, mac))
    finally:
        sock.close()
