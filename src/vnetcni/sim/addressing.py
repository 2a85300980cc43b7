"""How the simulated cloud hands out VNet addresses to node NICs.

Like Azure: the subnet's network address, its first host (the gateway) and the next two (the
platform's DNS) are reserved, as is the broadcast address. Each NIC then gets a primary address
followed by its own block of secondaries, so no two nodes ever own the same address and each
node's pool is disjoint by construction (the property that lets node IPAM work alone).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

RESERVED_AT_START = 4   # network, gateway, two platform DNS addresses
MAX_NODES = 250
AZURE_OUI = "00:0d:3a"


@dataclass(frozen=True)
class NodeAddresses:
    index: int
    primary: str
    secondaries: tuple[str, ...]
    mac: str
    primary6: str = ""  # dual-stack: the same layout in the IPv6 subnet
    secondaries6: tuple[str, ...] = ()


@dataclass(frozen=True)
class AddressPlan:
    subnet: str
    gateway: str
    prefixlen: int
    nodes: tuple[NodeAddresses, ...]
    subnet6: str = ""  # dual-stack
    gateway6: str = ""
    prefixlen6: int = 0


def node_mac(fabric: str, index: int) -> str:
    """A stable, fabric-specific MAC with Azure's OUI; the last octet is the node index."""
    digest = hashlib.sha256(fabric.encode()).digest()
    return f"{AZURE_OUI}:{digest[0]:02x}:{digest[1]:02x}:{index:02x}"


def _ipv6_plan(subnet6: str, nodes: int, ips_per_node: int) -> tuple[ipaddress.IPv6Network, list]:
    """Dual-stack: the IPv4 layout mirrored in the IPv6 subnet (the same offsets: ::4 is node1's
    primary, ::5.. its secondaries, ...), so a pod's two addresses are easy to read side by side."""
    try:
        net6 = ipaddress.ip_network(subnet6, strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid IPv6 subnet {subnet6!r}: {exc}") from None
    if net6.version != 6 or net6.is_link_local or net6.is_multicast or net6.is_loopback:
        raise ValueError(f"IPv6 subnet {subnet6} is not a usable IPv6 VNet range")
    if net6.prefixlen > 120 or net6.num_addresses < RESERVED_AT_START + nodes * (ips_per_node + 1) + 1:
        raise ValueError(f"IPv6 subnet {subnet6} is too small for {nodes} nodes x {ips_per_node + 1} addresses")
    base = net6.network_address + RESERVED_AT_START
    per_node = []
    for i in range(nodes):
        primary = base + i * (ips_per_node + 1)
        per_node.append((str(primary), tuple(str(primary + 1 + k) for k in range(ips_per_node))))
    return net6, per_node


def plan_addresses(fabric: str, subnet: str, nodes: int, ips_per_node: int, subnet6: str = "") -> AddressPlan:
    """Primary and secondary addresses of every node (in both subnets, dual-stack with `subnet6`);
    ValueError when a subnet is too small."""
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid subnet {subnet!r}: {exc}") from None
    if net.version != 4:
        raise ValueError(f"subnet {subnet} is not IPv4 (give the IPv6 one as the dual-stack subnet)")
    if net.prefixlen > 28:
        raise ValueError(f"subnet {subnet} is too small: use /28 or larger")
    if net.is_loopback or net.is_link_local or net.is_multicast:
        raise ValueError(f"subnet {subnet} is not a usable VNet range")
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"--nodes must be between 1 and {MAX_NODES}, got {nodes}")
    if ips_per_node < 1:
        raise ValueError(f"--ips-per-node must be at least 1, got {ips_per_node}")
    usable = net.num_addresses - RESERVED_AT_START - 1
    needed = nodes * (ips_per_node + 1)
    if needed > usable:
        raise ValueError(f"subnet {subnet} has {usable} assignable addresses; {nodes} nodes x "
                         f"(1 primary + {ips_per_node} secondaries) need {needed}")
    net6, six = _ipv6_plan(subnet6, nodes, ips_per_node) if subnet6 else (None, [("", ())] * nodes)
    base = net.network_address + RESERVED_AT_START
    out = []
    for i in range(nodes):
        primary = base + i * (ips_per_node + 1)
        secondaries = tuple(str(primary + 1 + k) for k in range(ips_per_node))
        out.append(NodeAddresses(index=i + 1, primary=str(primary), secondaries=secondaries,
                                 mac=node_mac(fabric, i + 1), primary6=six[i][0], secondaries6=six[i][1]))
    return AddressPlan(subnet=str(net), gateway=str(net.network_address + 1),
                       prefixlen=net.prefixlen, nodes=tuple(out),
                       subnet6=str(net6) if net6 else "", gateway6=str(net6.network_address + 1) if net6 else "",
                       prefixlen6=net6.prefixlen if net6 else 0)
