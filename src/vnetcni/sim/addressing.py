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


@dataclass(frozen=True)
class AddressPlan:
    subnet: str
    gateway: str
    prefixlen: int
    nodes: tuple[NodeAddresses, ...]


def node_mac(fabric: str, index: int) -> str:
    """A stable, fabric-specific MAC with Azure's OUI; the last octet is the node index."""
    digest = hashlib.sha256(fabric.encode()).digest()
    return f"{AZURE_OUI}:{digest[0]:02x}:{digest[1]:02x}:{index:02x}"


def plan_addresses(fabric: str, subnet: str, nodes: int, ips_per_node: int) -> AddressPlan:
    """Primary and secondary addresses of every node; ValueError when the subnet is too small."""
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid subnet {subnet!r}: {exc}") from None
    if net.version != 4:
        raise ValueError(f"subnet {subnet} is not IPv4 (the simulated VNet is IPv4 only)")
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
    base = net.network_address + RESERVED_AT_START
    out = []
    for i in range(nodes):
        primary = base + i * (ips_per_node + 1)
        secondaries = tuple(str(primary + 1 + k) for k in range(ips_per_node))
        out.append(NodeAddresses(index=i + 1, primary=str(primary), secondaries=secondaries,
                                 mac=node_mac(fabric, i + 1)))
    return AddressPlan(subnet=str(net), gateway=str(net.network_address + 1),
                       prefixlen=net.prefixlen, nodes=tuple(out))
