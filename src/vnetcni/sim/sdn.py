"""What the cloud's SDN does for a transparent-mode VNet: deliver each secondary address to the
NIC that owns it.

In bridge mode a pod answers ARP for its own address on the VNet's L2 segment (its node's bridge
carries the frames), so the fabric can stay a plain learning bridge. In transparent mode the pod
sits behind its node's routing table and nobody on the segment answers for it: on Azure the
platform answers every ARP request itself and forwards by destination address to the VM whose
NIC holds it, primary or secondary. The fabric namespace does the same, with kernel parts only:

- a route per secondary address (/32) to the owning node's primary address, and forwarding on,
  so the fabric delivers a packet for a pod to the node the metadata says owns the address;
- proxy ARP on the VNet bridge for routed addresses (`proxy_arp_pvlan`: the answer goes out of the
  port the question came in on, as the route does; no proxy delay), limited by an `arp` filter to
  the secondaries and the gateway, so each node still answers for its own primary;
- no ICMP redirects: a VM is never told to bypass the SDN.
Dual-stack, the same for IPv6: a /128 route per IPv6 secondary to the node's IPv6 primary, and
proxy neighbour discovery on the VNet bridge for exactly those addresses (a proxy entry per
address: the kernel's NDP proxy is per address already), forwarding on, no proxy delay.

The node's part is a Kubernetes node's: net.ipv4.ip_forward=1 (set inside the node namespace).
Every sysctl here is written inside the fabric's or the node's namespace, never the machine's.
"""

from __future__ import annotations

from . import kernel
from .model import FabricRecord, NodeRecord

ARP_TABLE = "vsim_sdn"
MODE_BRIDGE = "bridge"
MODE_TRANSPARENT = "transparent"
MODES = (MODE_BRIDGE, MODE_TRANSPARENT)


def _sysctl(netns: str, *settings: str) -> None:
    kernel.exec_in(netns, ["sysctl", "-q", "-w", *settings])


def configure_fabric(fabric: FabricRecord) -> None:
    """Forwarding, proxy ARP and no redirects in the fabric namespace (before any node exists)."""
    br = fabric.fabricBridge
    _sysctl(fabric.fabricNetns, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
            f"net.ipv4.conf.{br}.send_redirects=0", f"net.ipv4.conf.{br}.proxy_arp_pvlan=1",
            f"net.ipv4.neigh.{br}.proxy_delay=0")
    if fabric.subnet6:
        _sysctl(fabric.fabricNetns, "net.ipv6.conf.all.forwarding=1", f"net.ipv6.conf.{br}.proxy_ndp=1",
                f"net.ipv6.neigh.{br}.proxy_delay=0")


def configure_node(node: NodeRecord) -> None:
    """A routed node forwards between its NIC and its pods' veths (both families, dual-stack)."""
    _sysctl(node.netns, "net.ipv4.ip_forward=1", *(["net.ipv6.conf.all.forwarding=1"] if node.primary6 else []))


def routes(fabric: FabricRecord) -> list[str]:
    """`ip -batch` lines: every node's secondaries routed to its primary (and, dual-stack, its
    IPv6 secondaries to its IPv6 primary, each answered for by the fabric's NDP proxy)."""
    br = fabric.fabricBridge
    lines = [f"route replace {address}/32 via {node.primary} dev {br}"
             for node in fabric.nodes for address in node.secondaries]
    for node in fabric.nodes:
        for address in node.secondaries6:
            lines.append(f"route replace {address}/128 via {node.primary6} dev {br}")
            lines.append(f"neigh replace proxy {address} dev {br}")
    return lines


def arp_ruleset(fabric: FabricRecord) -> str:
    answered = [fabric.gateway] + [a for n in fabric.nodes for a in n.secondaries]
    return (f"table arp {ARP_TABLE} {{\n"
            f"  set answered {{ type ipv4_addr; elements = {{ {', '.join(answered)} }} }}\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            "    arp operation reply arp saddr ip != @answered drop\n"
            "  }\n"
            "}\n")


def install(fabric: FabricRecord) -> None:
    """Routes and the ARP filter for every node of the fabric (nodes are all known by now)."""
    kernel.run(["ip", "-n", fabric.fabricNetns, "-batch", "-"], stdin="\n".join(routes(fabric)) + "\n")
    kernel.exec_in(fabric.fabricNetns, ["nft", "-f", "-"], stdin=arp_ruleset(fabric))
