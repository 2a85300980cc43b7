"""The rtnetlink messages of a pod's ADD and DEL, encoded and decoded with `struct` alone.

A plugin without vnetd starts a fresh Python for every call; importing pyroute2 costs 150-250 ms
of it (asyncio, multiprocessing, its message classes), while a pod needs a handful of messages:
the veth pair with its peer created inside the pod's namespace, hairpin on its bridge port, link
up, addresses, routes, permanent neighbours, a link look-up and a link deletion; and the bridge
of a node without an uplink (a node's first ADD, in-process when no vnetd runs). They are built
here, byte for byte as pyroute2 builds them (tests/unit/test_nlmsg.py compares the two), and
rtnl.py sends them on a plain NETLINK_ROUTE socket. pyroute2 stays the tool of the cold paths
(adopting the uplink, inspecting an attachment for CHECK).

Layouts (linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h, linux/neighbour.h):
nlmsghdr = len u32, type u16, flags u16, seq u32, pid u32; an attribute = len u16, type u16,
payload padded to 4 bytes; a nested attribute's payload is attributes (VETH_INFO_PEER's starts
with the peer's own ifinfomsg).
"""

from __future__ import annotations

import os
import _socket as socket  # socket.py minus its enums and selectors (~2.5 ms of plugin start-up)
import struct

# message types and flags
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000

# link attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 18, 26, 28
IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = 31, 32
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE = 4  # hairpin
IFLA_BR_MCAST_SNOOPING, IFLA_BR_NF_CALL_IPTABLES = 23, 36
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1  # in IFLA_AF_SPEC / AF_INET6
IFLA_INET_CONF, IPV4_DEVCONF_ARP_NOTIFY = 1, 22  # in IFLA_AF_SPEC / AF_INET (include/uapi/linux/ip.h)
IFF_UP = 0x1
# address, route and neighbour attributes
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80

HEADER = struct.Struct("=IHHII")
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_ATTR = struct.Struct("=HH")


class NetlinkError(Exception):
    """A request the kernel refused; `code` is the errno (as pyroute2's NetlinkError has it)."""

    def __init__(self, code: int, msg: str | None = None) -> None:
        super().__init__(code, msg or os.strerror(code))
        self.code = code


# --- encoding ------------------------------------------------------------------------------
def attr(kind: int, payload: bytes) -> bytes:
    return _ATTR.pack(_ATTR.size + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind, b"".join(attrs))


def asciiz(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def u8(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=B", value))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def lladdr(kind: int, mac: str) -> bytes:
    return attr(kind, bytes.fromhex(mac.replace(":", "")))


def ip_address(kind: int, address: str) -> bytes:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return attr(kind, socket.inet_pton(family, address))


def message(mtype: int, flags: int, seq: int, body: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(body), mtype, flags, seq, 0) + body


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def link_by_name(name: str) -> bytes:
    """RTM_GETLINK / RTM_DELLINK of one link by its name."""
    return IFINFO.pack(0, 0, 0, 0, 0) + asciiz(IFLA_IFNAME, name)


def veth_pair(name: str, peer: str, peer_netns_fd: int, mtu: int, mac: str, peer_mac: str,
              master: int | None) -> bytes:
    """RTM_NEWLINK of a veth pair: this end up (a port of `master` unless None), the peer named
    `peer` created directly in the namespace `peer_netns_fd` refers to.

    Each end asks for one TX and one RX queue: the number a veth uses anyway. Without them the
    kernel allocates one per possible CPU, then cuts the device down to one (veth_init_queues),
    and that cut waits for an RCU grace period (synchronize_net) while holding the rtnl lock,
    which every netlink change on the node (every other pod's ADD) waits behind."""
    queues = u32(IFLA_NUM_TX_QUEUES, 1) + u32(IFLA_NUM_RX_QUEUES, 1)
    peer_msg = (IFINFO.pack(0, 0, 0, 0, 0) + asciiz(IFLA_IFNAME, peer) + u32(IFLA_NET_NS_FD, peer_netns_fd)
                + u32(IFLA_MTU, mtu) + lladdr(IFLA_ADDRESS, peer_mac) + queues)
    return (IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + asciiz(IFLA_IFNAME, name) + u32(IFLA_MTU, mtu)
            + lladdr(IFLA_ADDRESS, mac) + queues + (u32(IFLA_MASTER, master) if master else b"")
            + nested(IFLA_LINKINFO, asciiz(IFLA_INFO_KIND, "veth"),
                     nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg))))


def port_mode(name: str, hairpin: bool) -> bytes:
    """RTM_NEWLINK setting a bridge port's hairpin mode (`bridge link set dev NAME hairpin on`)."""
    return (IFINFO.pack(0, 0, 0, 0, 0) + asciiz(IFLA_IFNAME, name)
            + nested(IFLA_LINKINFO, asciiz(IFLA_INFO_SLAVE_KIND, "bridge"),
                     nested(IFLA_INFO_SLAVE_DATA, u8(IFLA_BRPORT_MODE, 1 if hairpin else 0))))


def bridge(name: str, mtu: int, mac: str) -> bytes:
    """RTM_NEWLINK of a bridge (`ip link add NAME address MAC mtu MTU type bridge`), down."""
    return (IFINFO.pack(0, 0, 0, 0, 0) + asciiz(IFLA_IFNAME, name) + u32(IFLA_MTU, mtu) + lladdr(IFLA_ADDRESS, mac)
            + nested(IFLA_LINKINFO, asciiz(IFLA_INFO_KIND, "bridge")))


def bridge_settings(index: int) -> bytes:
    """RTM_NEWLINK of vnet's bridge options: its own br_netfilter switch on (IFLA_BR_NF_CALL_IPTABLES),
    multicast snooping off (IFLA_BR_MCAST_SNOOPING; linux.py says why)."""
    return (IFINFO.pack(0, 0, index, 0, 0)
            + nested(IFLA_LINKINFO, asciiz(IFLA_INFO_KIND, "bridge"),
                     nested(IFLA_INFO_DATA, u8(IFLA_BR_NF_CALL_IPTABLES, 1), u8(IFLA_BR_MCAST_SNOOPING, 0))))


def no_ipv6_autoconf(name: str) -> bytes:
    """RTM_NEWLINK setting a link's IPv6 address generation mode to none (`ip link set dev NAME
    addrgenmode none`): the kernel gives it no link-local (nor any other automatic) address, so
    no fe80:: routes, DAD or router solicitation, when its carrier comes up."""
    return (IFINFO.pack(0, 0, 0, 0, 0) + asciiz(IFLA_IFNAME, name)
            + nested(IFLA_AF_SPEC, nested(socket.AF_INET6, u8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE))))


def arp_notify(index: int) -> bytes:
    """RTM_NEWLINK setting a link's IPv4 arp_notify to 1 (net.ipv4.conf.<link>.arp_notify):
    the kernel sends a gratuitous ARP when the link comes up or changes address. Through
    netlink, not /proc/sys: every pod's namespace has an `eth0` under the one dentry of
    /proc/sys/net/ipv4/conf, all in the same hash chain, so opening that path walks (and
    compares) one dentry per pod on the node."""
    return (IFINFO.pack(0, 0, index, 0, 0)
            + nested(IFLA_AF_SPEC, nested(socket.AF_INET, nested(IFLA_INET_CONF, u32(IPV4_DEVCONF_ARP_NOTIFY, 1)))))


def same_address(index: int, mac: str) -> bytes:
    """RTM_NEWLINK setting link `index`'s MAC to `mac`, the one it has (`ip link set dev NAME
    address MAC`): nothing changes, but the kernel still runs its NETDEV_CHANGEADDR notifiers,
    on which a link with arp_notify on announces each of its IPv4 addresses (a gratuitous ARP,
    the frame it sends when it comes up), and flushes the link's neighbour entries, permanent
    ones too. Only CAP_NET_ADMIN is needed (a packet socket would need CAP_NET_RAW)."""
    return IFINFO.pack(0, 0, index, 0, 0) + lladdr(IFLA_ADDRESS, mac)


def link_up(index: int) -> bytes:
    return IFINFO.pack(0, 0, index, IFF_UP, IFF_UP)


def new_address(index: int, address: str, prefixlen: int) -> bytes:
    """RTM_NEWADDR: IPv4 with IFA_LOCAL (what `ip addr add` sends), IPv6 usable at once (NODAD)."""
    if ":" in address:
        return IFADDR.pack(socket.AF_INET6, prefixlen, IFA_F_NODAD, 0, index) + ip_address(IFA_ADDRESS, address)
    return (IFADDR.pack(socket.AF_INET, prefixlen, 0, 0, index) + ip_address(IFA_LOCAL, address)
            + ip_address(IFA_ADDRESS, address))


def new_route(index: int, dst: str, dst_len: int, gateway: str = "") -> bytes:
    """RTM_NEWROUTE in the main table out of link `index` (scope link without a gateway)."""
    body = RTMSG.pack(family_of(dst), dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                      RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK, RTN_UNICAST, 0) + u32(RTA_OIF, index)
    if dst_len:
        body += ip_address(RTA_DST, dst)
    if gateway:
        body += ip_address(RTA_GATEWAY, gateway)
    return body


def permanent_neighbour(index: int, address: str, mac: str) -> bytes:
    return (NDMSG.pack(family_of(address), index, NUD_PERMANENT, 0, 0) + ip_address(NDA_DST, address)
            + lladdr(NDA_LLADDR, mac))


def addresses_of(family: int = socket.AF_UNSPEC) -> bytes:
    """RTM_GETADDR (with NLM_F_DUMP): every address of a family."""
    return IFADDR.pack(family, 0, 0, 0, 0)


# --- decoding ------------------------------------------------------------------------------
def attrs(buf: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes in buf[offset:] by type (flags masked off); the last of a type wins."""
    out = {}
    end = len(buf)
    while offset + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(buf, offset)
        if length < _ATTR.size:
            break
        out[kind & ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)] = buf[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return out


def text(payload: bytes | None) -> str:
    return payload.split(b"\0", 1)[0].decode() if payload else ""


def mac_text(payload: bytes | None) -> str:
    return ":".join(f"{b:02x}" for b in payload) if payload else ""


def uint(payload: bytes | None) -> int | None:
    if not payload:
        return None
    return int.from_bytes(payload[:4], "little") if len(payload) >= 4 else payload[0]


class Link:
    """An RTM_NEWLINK answer (body without the netlink header), the fields the hot path reads."""

    __slots__ = ("index", "flags", "name", "mac", "mtu", "master", "info")

    def __init__(self, body: bytes) -> None:
        _family, _type, self.index, self.flags, _change = IFINFO.unpack_from(body)
        top = attrs(body, IFINFO.size)
        self.name = text(top.get(IFLA_IFNAME))
        self.mac = mac_text(top.get(IFLA_ADDRESS))
        self.mtu = uint(top.get(IFLA_MTU)) or 0
        self.master = uint(top.get(IFLA_MASTER)) or 0
        self.info = attrs(top.get(IFLA_LINKINFO, b""))

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def kind(self) -> str:
        return text(self.info.get(IFLA_INFO_KIND))

    def info_data(self) -> dict[int, bytes]:
        return attrs(self.info.get(IFLA_INFO_DATA, b""))


class Address:
    """An RTM_NEWADDR answer: family, prefix length, scope, link and the address as text."""

    __slots__ = ("family", "prefixlen", "scope", "index", "address")

    def __init__(self, body: bytes) -> None:
        self.family, self.prefixlen, _flags, self.scope, self.index = IFADDR.unpack_from(body)
        values = attrs(body, IFADDR.size)
        raw = values.get(IFA_LOCAL) or values.get(IFA_ADDRESS) or b""
        self.address = socket.inet_ntop(self.family, raw) if raw else ""
