"""What the cloud fabric counts and enforces, as nftables bridge rules inside the fabric namespace.

Always: per node port, counters of unicast IPv4 packets entering the fabric from the node and
leaving the fabric towards it (the tests prove node-local traffic never crosses the fabric with
them). Multicast (the IGMP reports a node sends when its bridge comes up) and broadcast frames are
not counted: they reach the fabric on a real VNet too, and say nothing about where pod traffic goes.
With enforce_source: a node may only send from addresses its NIC owns (its primary and
secondaries), IPv4 and ARP alike, as the VNet drops spoofed traffic; drops are counted per node.
"""

from __future__ import annotations

import json

from . import kernel
from .model import FabricRecord

TABLE = "vsim"
UNICAST = "ether type ip ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00"
# Dual-stack: unicast IPv6 of pods and nodes (TCP, UDP, pings), without neighbour discovery, which
# is the link's own chatter and says nothing about where pod traffic goes.
UNICAST6 = "ether type ip6 ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00"
IPV6_TRAFFIC = ("meta l4proto != ipv6-icmp", "icmpv6 type { echo-request, echo-reply }")


def _cid(node: str) -> str:
    return node.replace("-", "_")


def ruleset(fabric: FabricRecord) -> str:
    lines = [f"table bridge {TABLE} {{"]
    pre = []
    post = []
    for n in fabric.nodes:
        c = _cid(n.name)
        lines.append(f"  counter ipv4_from_{c} {{}}")
        lines.append(f"  counter ipv4_to_{c} {{}}")
        lines.append(f"  counter spoofed_from_{c} {{}}")
        port = f'"{n.fabricPort}"'
        pre.append(f"    iifname {port} {UNICAST} counter name ipv4_from_{c}")
        if fabric.enforceSource:
            owned = ", ".join([n.primary, *n.secondaries])
            lines.append(f"  set owned_{c} {{ type ipv4_addr; elements = {{ {owned} }} }}")
            # The unspecified source (0.0.0.0, like :: below) claims no address: a bridge's IGMP
            # report before it has its address, an ARP probe (RFC 5227). Not spoofing.
            pre.append(f"    iifname {port} ether type ip ip saddr != @owned_{c} ip saddr != 0.0.0.0 "
                       f"counter name spoofed_from_{c} drop")
            pre.append(f"    iifname {port} ether type arp arp saddr ip != @owned_{c} arp saddr ip != 0.0.0.0 "
                       f"counter name spoofed_from_{c} drop")
        post.append(f"    oifname {port} {UNICAST} counter name ipv4_to_{c}")
        if fabric.subnet6:
            lines.append(f"  counter ipv6_from_{c} {{}}")
            lines.append(f"  counter ipv6_to_{c} {{}}")
            for match in IPV6_TRAFFIC:
                pre.append(f"    iifname {port} {UNICAST6} {match} counter name ipv6_from_{c}")
                post.append(f"    oifname {port} {UNICAST6} {match} counter name ipv6_to_{c}")
            if fabric.enforceSource:
                owned6 = ", ".join([n.primary6, *n.secondaries6])
                lines.append(f"  set owned6_{c} {{ type ipv6_addr; elements = {{ {owned6} }} }}")
                pre.append(f"    iifname {port} ether type ip6 ip6 saddr != @owned6_{c} ip6 saddr != fe80::/10 "
                           f"ip6 saddr != :: counter name spoofed_from_{c} drop")
    lines.append("  chain prerouting {")
    lines.append("    type filter hook prerouting priority -200; policy accept;")
    lines += pre
    lines.append("  }")
    lines.append("  chain postrouting {")
    lines.append("    type filter hook postrouting priority 200; policy accept;")
    lines += post
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def install(fabric: FabricRecord) -> None:
    kernel.exec_in(fabric.fabricNetns, ["nft", "-f", "-"], stdin=ruleset(fabric))


def counters(fabric: FabricRecord) -> dict[str, dict[str, int]]:
    """{node: {"ipv4_from": unicast IPv4 packets from the node into the fabric, "ipv4_to": out of the
    fabric to the node, "spoofed_from": packets dropped for a source the node does not own, and on
    a dual-stack fabric "ipv6_from", "ipv6_to": the same for IPv6 (without neighbour discovery)}}."""
    out = kernel.exec_in(fabric.fabricNetns, ["nft", "-j", "list", "counters", "table", "bridge", TABLE]).stdout
    by_name = {}
    for item in json.loads(out).get("nftables", []):
        c = item.get("counter")
        if c:
            by_name[c["name"]] = int(c["packets"])
    result = {}
    for n in fabric.nodes:
        c = _cid(n.name)
        kinds = ("ipv4_from", "ipv4_to", "spoofed_from") + (("ipv6_from", "ipv6_to") if fabric.subnet6 else ())
        result[n.name] = {kind: by_name.get(f"{kind}_{c}", 0) for kind in kinds}
    return result
