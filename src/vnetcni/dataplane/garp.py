"""A pod's gratuitous ARP, sent by vnetd right after it answers the pod's ADD.

A new pod announces each of its IPv4 addresses (a broadcast ARP request for the address, from
it): neighbours that still hold an entry for a reused address (another pod, the node, the VNet
side) replace the old pod's MAC at once. The kernel sends this itself when the link comes up
with arp_notify on (what a plugin run without vnetd relies on), but from inside the netlink
request that brings the link up: the bridge floods it to every port and every pod's namespace
processes it, all before that request returns, so the ADD's answer waited for work that grows
with the number of pods on the node (~0.3 ms of CPU at 250). vnetd brings the link up before
the addresses are added (no announcement then: the kernel sends one at link up only, for the
addresses the link has by then) and sends the same frame through a packet socket opened in the
pod's namespace once the answer is delivered (cni/deadline.after_answer).

The frame is the kernel's own (net/ipv4/arp.c, arp_create() for inetdev_send_gratuitous_arp):
Ethernet broadcast from the link's MAC, ARP request, sender and target protocol address the
pod's, target hardware address zero; tests/netns/test_garp.py compares the two byte for byte.
"""

from __future__ import annotations

import _socket as socket  # socket.py minus its enums and selectors (~2.5 ms of plugin start-up)
import struct

ETH_P_ARP, ETH_P_IP = 0x0806, 0x0800
ARPHRD_ETHER, ARPOP_REQUEST = 1, 1
_ETHER = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


def frame(mac: str, address: str) -> bytes:
    """The gratuitous ARP request for IPv4 `address` from link MAC `mac`."""
    hw, ip = bytes.fromhex(mac.replace(":", "")), socket.inet_aton(address)
    return (_ETHER.pack(b"\xff" * 6, hw, ETH_P_ARP)
            + _ARP.pack(ARPHRD_ETHER, ETH_P_IP, 6, 4, ARPOP_REQUEST, hw, ip, bytes(6), ip))


class Announcement:
    """The announcement of a pod's IPv4 addresses on its link `ifname`. Made inside the pod's
    namespace (the packet socket belongs to it, and names `ifname` there; it receives nothing:
    protocol 0); sent from any thread, once; closed by send() or close()."""

    __slots__ = ("_sock", "_ifname", "_frames")

    def __init__(self, ifname: str, mac: str, addresses: list[str]) -> None:
        self._frames = [frame(mac, a) for a in addresses]
        self._ifname = ifname
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)

    def send(self) -> None:
        """Each address's frame (a send on a packet socket does not wait for anything); raises
        OSError naming the link and the address when one cannot be sent (e.g. the pod's
        namespace or link is gone)."""
        try:
            for data in self._frames:
                try:
                    self._sock.sendto(data, (self._ifname, ETH_P_ARP))
                except OSError as exc:
                    address = socket.inet_ntoa(data[-4:])
                    raise OSError(exc.errno, f"gratuitous ARP for {address} on the pod's {self._ifname} "
                                             f"not sent: {exc.strerror}") from None
        finally:
            self.close()

    def close(self) -> None:
        self._sock.close()
