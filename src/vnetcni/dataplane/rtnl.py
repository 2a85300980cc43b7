"""A synchronous rtnetlink channel for the per-pod hot path.

Messages are pyroute2's own classes (ifinfmsg, ifaddrmsg, rtmsg: encoding, attributes, decoding);
only the transport is ours: a plain NETLINK_ROUTE socket, one request and its answer at a time,
no event loop. On this machine that costs ~0.2 ms per request against ~1.3 ms through
IPRoute's asyncio core, and opening the channel inside a pod's namespace ~0.1 ms against ~1.5 ms.
Cold paths (bridge set-up, uplink adoption, inspection for CHECK) keep using IPRoute.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWNEIGH,
                                   RTM_NEWROUTE)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from . import netns as nsutil

NLMSG_ERROR = 2
NLMSG_DONE = 3
IFF_UP = 0x1
_HEADER = struct.Struct("=IHHII")
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_CHANGE = NLM_F_REQUEST | NLM_F_ACK
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02


class RtnlChannel:
    def __init__(self, netns: str = "") -> None:
        if netns:
            with nsutil.entered(netns):
                self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        else:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "RtnlChannel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- transport -----------------------------------------------------------------------
    def _request(self, msg, mtype: int, flags: int) -> bytes | None:
        """Send one request; return the answering message (a GET) or None (an ACK).
        A kernel error is raised as pyroute2's NetlinkError (its errno in .code)."""
        self._seq += 1
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._sock.send(msg.data)
        answer = None
        for _typ, chunk in self._answers(self._seq):
            answer = chunk
            if not flags & NLM_F_ACK:
                break
        return answer

    def request_raw(self, mtype: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """A request whose body the caller encoded (for messages pyroute2 cannot express): the
        answer's messages as (type, body without the netlink header), up to the ACK or DONE."""
        self._seq += 1
        self._sock.send(_HEADER.pack(_HEADER.size + len(payload), mtype, flags, self._seq, 0) + payload)
        return [(typ, chunk[_HEADER.size:]) for typ, chunk in self._answers(self._seq)]

    def _answers(self, seq: int):
        """The messages answering request `seq` (type, whole message) until its ACK or DONE; a
        kernel error is raised as NetlinkError."""
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, typ, _flags, mseq, _pid = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise NetlinkError(errno.EPROTO, "malformed netlink answer")
                chunk = data[offset:offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue  # a late answer to an earlier request
                if typ == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", chunk, _HEADER.size)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return
                if typ == NLMSG_DONE:
                    return
                yield typ, chunk

    # --- links -----------------------------------------------------------------------------
    def link_index(self, name: str) -> int | None:
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        try:
            data = self._request(msg, RTM_GETLINK, NLM_F_REQUEST)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        answer = ifinfmsg(data)
        answer.decode()
        return answer["index"]

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int, mac: str, peer_mac: str,
                 master: int | None) -> None:
        """The pair in one request: this end up (on bridge `master` unless None), the peer
        created directly inside the namespace `peer_netns_fd` refers to."""
        msg = ifinfmsg()
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", peer_netns_fd), ("IFLA_MTU", mtu),
                      ("IFLA_ADDRESS", peer_mac)]
        msg["attrs"] = [
            ("IFLA_IFNAME", name), ("IFLA_MTU", mtu), ("IFLA_ADDRESS", mac),
            *([("IFLA_MASTER", master)] if master else []),
            ("IFLA_LINKINFO", {"attrs": [
                ("IFLA_INFO_KIND", "veth"),
                ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]}),
            ]}),
        ]
        self._request(msg, RTM_NEWLINK, _CREATE)

    def set_hairpin(self, name: str, on: bool = True) -> None:
        """Hairpin mode on a bridge port (`bridge link set dev NAME hairpin on`): the bridge may
        send a frame back out of the port it came in on. A pod calling a Service that kube-proxy
        DNATs back to the same pod needs it. The kernel ignores port options in the request that
        creates the link, so this is a second request (~0.2 ms), by name."""
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_SLAVE_KIND", "bridge"),
            ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", 1 if on else 0)]}),
        ]})]
        self._request(msg, RTM_NEWLINK, _CHANGE)

    def set_up(self, index: int) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        self._request(msg, RTM_NEWLINK, _CHANGE)

    def delete_link(self, name: str) -> bool:
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        try:
            self._request(msg, RTM_DELLINK, _CHANGE)
            return True
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise

    # --- addresses and routes ---------------------------------------------------------------
    def add_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = index
        if iface.version == 6:
            # Usable at once: duplicates are ruled out by IPAM, and a pod must not wait out DAD
            # (about a second) before its first packet, nor see its address go "dadfailed".
            msg["flags"] = IFA_F_NODAD
        ip = str(iface.ip)
        msg["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)] if iface.version == 4 else [("IFA_ADDRESS", ip)]
        self._request(msg, RTM_NEWADDR, _CREATE)

    def add_route(self, index: int, dst: str, gateway: str = "") -> None:
        net = ipaddress.ip_network(dst, strict=False)
        msg = rtmsg()
        msg["family"] = socket.AF_INET if net.version == 4 else socket.AF_INET6
        msg["dst_len"] = net.prefixlen
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_BOOT
        msg["scope"] = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        msg["type"] = RTN_UNICAST
        attrs = [("RTA_OIF", index)]
        if net.prefixlen:
            attrs.append(("RTA_DST", str(net.network_address)))
        if gateway:
            attrs.append(("RTA_GATEWAY", gateway))
        msg["attrs"] = attrs
        self._request(msg, RTM_NEWROUTE, _CREATE)

    def add_neighbour(self, index: int, address: str, mac: str) -> None:
        """A permanent neighbour entry (no ARP/ND is ever sent for it); replaces an existing one."""
        ip = ipaddress.ip_address(address)
        msg = ndmsg()
        msg["family"] = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        msg["ifindex"] = index
        msg["state"] = NUD_PERMANENT
        msg["attrs"] = [("NDA_DST", str(ip)), ("NDA_LLADDR", mac)]
        self._request(msg, RTM_NEWNEIGH, _CHANGE | NLM_F_CREATE | NLM_F_REPLACE)
