"""The NMAgent `getinterfaceinfov1` document: hardened parsing, choosing the node's pool, rendering.

The answer comes from the network (or a file an operator wrote), so it is parsed as hostile:
bounded in size, no DTD at all (that rules out entity expansion and external entities), and
every attribute checked. Anything we cannot use is a MetadataError: a failed refresh, after
which IPAM keeps serving from the last good pool.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..cni._record import FrozenRecord
from .mac import normalize_mac
from .model import NodePool

__all__ = ["MetadataError", "normalize_mac", "parse_interfaces", "select_pool", "select_pools",
           "pool_from_metadata", "pools_from_metadata",
           "render_interfaces", "render_node", "node_interface", "NodePool", "MAX_METADATA_BYTES"]

# 30 addresses take ~2 KiB; even a NIC with hundreds of addresses fits easily.
MAX_METADATA_BYTES = 256 * 1024


class MetadataError(Exception):
    """A metadata answer (or file) that cannot be used: the refresh failed."""


class MetadataAddress(FrozenRecord):
    __slots__ = ("address", "primary")

    def __init__(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, primary: bool) -> None:
        self._set(address=address, primary=primary)


class MetadataSubnet(FrozenRecord):
    __slots__ = ("prefix", "addresses")

    def __init__(self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network,
                 addresses: tuple[MetadataAddress, ...]) -> None:
        self._set(prefix=prefix, addresses=tuple(addresses))


class MetadataInterface(FrozenRecord):
    __slots__ = ("mac", "primary", "subnets")

    def __init__(self, mac: str, primary: bool, subnets: tuple[MetadataSubnet, ...]) -> None:
        self._set(mac=mac, primary=primary, subnets=tuple(subnets))


def _bool_attr(el, name: str, where: str) -> bool:
    raw = el.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise MetadataError(f"{where}: {name}={raw!r} is not true/false")
    return value == "true"


def _required_attr(el, name: str, where: str) -> str:
    raw = el.get(name)
    if raw is None or not raw.strip():
        raise MetadataError(f"{where} has no {name} attribute")
    return raw.strip()


def _parse_subnet(el, where: str) -> MetadataSubnet:
    prefix_text = _required_attr(el, "Prefix", where)
    try:
        prefix = ipaddress.ip_network(prefix_text)
    except ValueError:
        raise MetadataError(f"{where}: Prefix {prefix_text!r} is not a network") from None
    addresses = []
    for child in el:
        if child.tag != "IPAddress":
            continue
        text = _required_attr(child, "Address", f"an IPAddress in {prefix}")
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise MetadataError(f"{where}: Address {text!r} is not an IP address") from None
        if addr not in prefix:
            raise MetadataError(f"{where}: address {addr} is outside its subnet {prefix}")
        addresses.append(MetadataAddress(addr, _bool_attr(child, "IsPrimary", f"address {addr}")))
    return MetadataSubnet(prefix, tuple(addresses))


def _parse_xml(raw: bytes):
    # Imported here: the parser is needed only when a refresh actually happens.
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        return fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise MetadataError(f"refused hostile XML ({type(exc).__name__})") from None
    except (ParseError, ValueError, UnicodeError) as exc:
        raise MetadataError(f"malformed XML: {exc}") from None


def parse_interfaces(raw: bytes) -> tuple[MetadataInterface, ...]:
    """Parse a getinterfaceinfov1 answer; MetadataError for anything unusable."""
    if not isinstance(raw, (bytes, bytearray)):
        raise MetadataError("metadata answer is not bytes")
    if len(raw) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata answer too large ({len(raw)} bytes, limit {MAX_METADATA_BYTES})")
    if not raw.strip():
        raise MetadataError("metadata answer is empty")
    root = _parse_xml(bytes(raw))
    if root.tag != "Interfaces":
        raise MetadataError(f"root element is <{root.tag}>, expected <Interfaces>")
    interfaces = []
    seen: set[str] = set()
    for el in root:
        if el.tag != "Interface":
            continue  # unknown elements: newer NMAgent builds may add some
        mac_text = _required_attr(el, "MacAddress", "an Interface")
        try:
            mac = normalize_mac(mac_text)
        except ValueError:
            raise MetadataError(f"interface MacAddress {mac_text!r} is not a MAC address") from None
        if mac in seen:
            raise MetadataError(f"interface {mac} is listed twice")
        seen.add(mac)
        where = f"interface {mac}"
        subnets = tuple(_parse_subnet(s, where) for s in el if s.tag == "IPSubnet")
        interfaces.append(MetadataInterface(mac, _bool_attr(el, "IsPrimary", where), subnets))
    return tuple(interfaces)


def _choose_interface(interfaces: tuple[MetadataInterface, ...], mac: str | None) -> MetadataInterface:
    if not interfaces:
        raise MetadataError("the metadata lists no interfaces")
    if mac:
        for iface in interfaces:
            if iface.mac == mac:
                return iface
        listed = ", ".join(i.mac for i in interfaces)
        raise MetadataError(f"no interface with MAC {mac} in the metadata (listed: {listed})")
    primaries = [i for i in interfaces if i.primary]
    if len(primaries) == 1:
        return primaries[0]
    if not primaries and len(interfaces) == 1:
        return interfaces[0]
    raise MetadataError(
        f"cannot tell which interface is the node's: {len(primaries)} of {len(interfaces)} "
        "are marked primary; set ipam.macAddress"
    )


def select_pools(interfaces: tuple[MetadataInterface, ...], mac: str | None = None) -> tuple[NodePool, NodePool | None]:
    """The pools of the NIC with `mac` (else the primary NIC): the secondary addresses of the
    subnet holding its primary IPv4 address and, dual-stack, those of the subnet holding its
    primary IPv6 address (listed the same way, `IPSubnet`/`IPAddress`). An IPv6-only NIC gives
    its IPv6 pool first. Other subnets are not handed out."""
    iface = _choose_interface(interfaces, mac)
    by_family: dict[int, list[MetadataSubnet]] = {}
    for s in iface.subnets:
        if any(a.primary for a in s.addresses):
            by_family.setdefault(s.prefix.version, []).append(s)
    if not by_family:
        raise MetadataError(f"interface {iface.mac} has no primary address")
    pools = []
    for version in sorted(by_family):
        subnets = by_family[version]
        n_primary = sum(1 for s in subnets for a in s.addresses if a.primary)
        if n_primary > 1:
            raise MetadataError(f"interface {iface.mac} has {n_primary} primary IPv{version} addresses")
        pools.append(_pool_of(iface, subnets[0]))
    return pools[0], (pools[1] if len(pools) > 1 else None)


def select_pool(interfaces: tuple[MetadataInterface, ...], mac: str | None = None) -> NodePool:
    """The first pool of select_pools (IPv4 when the NIC has an IPv4 primary address)."""
    return select_pools(interfaces, mac)[0]


def _pool_of(iface: MetadataInterface, subnet: MetadataSubnet) -> NodePool:
    primary = next(a.address for a in subnet.addresses if a.primary)
    network = subnet.prefix
    gateway = network.network_address + 1
    reserved = {network.network_address: "network", gateway: "gateway"}
    if network.version == 4:
        reserved[network.broadcast_address] = "broadcast"
    if network.num_addresses < 4:
        raise MetadataError(f"subnet {network} is too small to hold a gateway and pods")
    secondaries = set()
    for a in subnet.addresses:
        if a.primary:
            continue
        if a.address in reserved:
            raise MetadataError(f"address {a.address} is the {reserved[a.address]} address of {network}")
        if a.address == primary:
            raise MetadataError(f"address {a.address} is listed as both primary and secondary")
        secondaries.add(a.address)
    return NodePool(
        subnet=str(network),
        gateway=str(gateway),
        primary=str(primary),
        mac=iface.mac,
        addresses=tuple(str(a) for a in sorted(secondaries)),
    )


def pool_from_metadata(raw: bytes, mac: str | None = None) -> NodePool:
    return select_pool(parse_interfaces(raw), mac)


def pools_from_metadata(raw: bytes, mac: str | None = None) -> tuple[NodePool, NodePool | None]:
    return select_pools(parse_interfaces(raw), mac)


def render_interfaces(interfaces: Iterable[MetadataInterface]) -> bytes:
    """The XML NMAgent would answer for these interfaces (for the simulator and tests)."""
    lines = ["<Interfaces>"]
    for iface in interfaces:
        mac = iface.mac.replace(":", "").upper()
        lines.append(f'  <Interface MacAddress="{mac}" IsPrimary="{str(iface.primary).lower()}">')
        for subnet in iface.subnets:
            lines.append(f'    <IPSubnet Prefix="{subnet.prefix}">')
            for a in subnet.addresses:
                lines.append(f'      <IPAddress Address="{a.address}" IsPrimary="{str(a.primary).lower()}"/>')
            lines.append("    </IPSubnet>")
        lines.append("  </Interface>")
    lines.append("</Interfaces>")
    return ("\n".join(lines) + "\n").encode()


def _subnet(subnet: str, primary: str, secondaries: Iterable[str]) -> MetadataSubnet:
    addresses = [MetadataAddress(ipaddress.ip_address(primary), True)]
    addresses += [MetadataAddress(ipaddress.ip_address(a), False) for a in secondaries]
    return MetadataSubnet(ipaddress.ip_network(subnet), tuple(addresses))


def node_interface(mac: str, subnet: str, primary: str, secondaries: Iterable[str],
                   is_primary: bool = True, ipv6: tuple[str, str, Iterable[str]] | None = None) -> MetadataInterface:
    """One NIC as the metadata lists it: its primary address, then its secondary ones; with
    `ipv6` = (subnet, primary, secondaries), dual-stack: the IPv6 subnet listed the same way."""
    subnets = [_subnet(subnet, primary, secondaries)]
    if ipv6 is not None:
        subnets.append(_subnet(*ipv6))
    return MetadataInterface(normalize_mac(mac), is_primary, tuple(subnets))


def render_node(mac: str, subnet: str, primary: str, secondaries: Iterable[str],
                ipv6: tuple[str, str, Iterable[str]] | None = None) -> bytes:
    """The answer for a node with one NIC (the common case), dual-stack with `ipv6`."""
    return render_interfaces([node_interface(mac, subnet, primary, secondaries, ipv6=ipv6)])
