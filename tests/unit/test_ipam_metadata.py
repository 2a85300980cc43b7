"""Parsing the NMAgent getinterfaceinfov1 answer: the real shape, MAC spellings, hostile XML and
every wrong shape we could think of (each must be a MetadataError, never a crash or a pool)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from vnetcni.ipam.mac import normalize_mac
from vnetcni.ipam.metadata import (MAX_METADATA_BYTES, MetadataError, node_interface, parse_interfaces,
                                   pool_from_metadata, render_interfaces, render_node)

SECONDARIES = [f"10.240.0.{i}" for i in range(36, 66)]

SAMPLE = b"""<Interfaces>
  <Interface MacAddress="000D3A51C490" IsPrimary="true">
    <IPSubnet Prefix="10.240.0.0/16">
      <IPAddress Address="10.240.0.35" IsPrimary="true"/>
""" + b"".join(f'      <IPAddress Address="{a}" IsPrimary="false"/>\n'.encode() for a in reversed(SECONDARIES)) + b"""
    </IPSubnet>
  </Interface>
</Interfaces>
"""


def test_sample_answer_gives_thirty_secondaries_in_numeric_order():
    pool = pool_from_metadata(SAMPLE)
    assert pool.subnet == "10.240.0.0/16"
    assert pool.gateway == "10.240.0.1"
    assert pool.primary == "10.240.0.35"
    assert pool.mac == "00:0d:3a:51:c4:90"
    assert list(pool.addresses) == SECONDARIES  # listed in reverse, sorted numerically
    assert pool.primary not in pool.addresses
    assert pool.cidr("10.240.0.36") == "10.240.0.36/16"


def test_numeric_not_lexical_order():
    pool = pool_from_metadata(render_node("000D3A51C490", "10.1.0.0/24", "10.1.0.4",
                                          ["10.1.0.100", "10.1.0.9", "10.1.0.10"]))
    assert pool.addresses == ("10.1.0.9", "10.1.0.10", "10.1.0.100")


@pytest.mark.parametrize("spelling", ["000D3A51C490", "000d3a51c490", "00:0d:3a:51:c4:90", "00:0D:3A:51:C4:90",
                                      "00-0D-3A-51-C4-90", "000d.3a51.c490", " 00:0d:3a:51:c4:90 "])
def test_mac_spellings(spelling):
    assert normalize_mac(spelling) == "00:0d:3a:51:c4:90"


@pytest.mark.parametrize("bad", ["", "00:0d:3a:51:c4", "00:0d:3a:51:c4:9g", "00:0d-3a:51:c4:90", "000d3a51c4900",
                                 "0:d:3a:51:c4:90", "00::0d:3a:51:c4:90", None, 12, "000d.3a51c490"])
def test_bad_macs_are_refused(bad):
    with pytest.raises(ValueError):
        normalize_mac(bad)


def two_nics(primary_flags=(True, False)) -> bytes:
    return render_interfaces([
        node_interface("000D3A000001", "10.240.0.0/16", "10.240.0.4", ["10.240.0.5", "10.240.0.6"], primary_flags[0]),
        node_interface("000D3A000002", "10.241.0.0/16", "10.241.0.4", ["10.241.0.5"], primary_flags[1]),
    ])


def test_interface_chosen_by_mac_else_primary():
    assert pool_from_metadata(two_nics()).mac == "00:0d:3a:00:00:01"
    chosen = pool_from_metadata(two_nics(), normalize_mac("00-0D-3A-00-00-02"))
    assert chosen.mac == "00:0d:3a:00:00:02" and chosen.addresses == ("10.241.0.5",)
    assert chosen.gateway == "10.241.0.1"


def test_unknown_mac_is_an_error_naming_the_listed_ones():
    with pytest.raises(MetadataError, match="no interface with MAC 00:00:00:00:00:09.*00:0d:3a:00:00:01"):
        pool_from_metadata(two_nics(), "00:00:00:00:00:09")


@pytest.mark.parametrize("flags", [(True, True), (False, False)])
def test_ambiguous_primary_needs_a_mac(flags):
    with pytest.raises(MetadataError, match="macAddress"):
        pool_from_metadata(two_nics(flags))


def test_a_single_unflagged_interface_is_the_node_nic():
    raw = render_interfaces([node_interface("000D3A000001", "10.0.0.0/24", "10.0.0.4", ["10.0.0.5"], False)])
    assert pool_from_metadata(raw).addresses == ("10.0.0.5",)


def test_unknown_elements_are_ignored():
    raw = SAMPLE.replace(b"<Interfaces>", b"<Interfaces><Version>2</Version>").replace(
        b"</IPSubnet>", b"<Future x='1'/></IPSubnet>")
    assert len(pool_from_metadata(raw).addresses) == 30


def test_ipv6_subnet():
    raw = render_node("000D3A51C490", "fd00:1::/64", "fd00:1::4", ["fd00:1::5", "fd00:1::6"])
    pool = pool_from_metadata(raw)
    assert pool.gateway == "fd00:1::1" and pool.cidr("fd00:1::5") == "fd00:1::5/64"


def test_the_subnet_of_the_primary_ipv4_address_is_the_pool():
    raw = b"""<Interfaces><Interface MacAddress="000D3A51C490" IsPrimary="true">
      <IPSubnet Prefix="fd00::/64"><IPAddress Address="fd00::4" IsPrimary="true"/>
        <IPAddress Address="fd00::5" IsPrimary="false"/></IPSubnet>
      <IPSubnet Prefix="10.9.0.0/24"><IPAddress Address="10.9.0.4" IsPrimary="true"/>
        <IPAddress Address="10.9.0.5" IsPrimary="false"/></IPSubnet>
    </Interface></Interfaces>"""
    assert pool_from_metadata(raw).addresses == ("10.9.0.5",)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<Interfaces><Interface MacAddress="&lol9;" IsPrimary="true"/></Interfaces>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Interfaces [<!ENTITY leak SYSTEM "file:///etc/passwd">]>
<Interfaces><Interface MacAddress="000D3A51C490" IsPrimary="true">
<IPSubnet Prefix="10.240.0.0/16"><IPAddress Address="&leak;" IsPrimary="false"/></IPSubnet>
</Interface></Interfaces>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Interfaces SYSTEM "http://127.0.0.1:9/evil.dtd">
<Interfaces/>"""


@pytest.mark.parametrize("raw", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD], ids=["laughs", "entity", "dtd"])
def test_hostile_xml_is_refused(raw):
    with pytest.raises(MetadataError, match="hostile") as info:
        parse_interfaces(raw)
    assert "root:" not in str(info.value)  # nothing of /etc/passwd leaks into the error


def test_oversized_answer_is_refused_before_parsing():
    raw = SAMPLE + b" " * MAX_METADATA_BYTES
    with pytest.raises(MetadataError, match="too large"):
        parse_interfaces(raw)


def _one(addr_attrs: str = 'Address="10.240.0.36" IsPrimary="false"', prefix: str = 'Prefix="10.240.0.0/16"',
         iface: str = 'MacAddress="000D3A51C490" IsPrimary="true"') -> bytes:
    return (f'<Interfaces><Interface {iface}><IPSubnet {prefix}>'
            f'<IPAddress Address="10.240.0.35" IsPrimary="true"/><IPAddress {addr_attrs}/>'
            f'</IPSubnet></Interface></Interfaces>').encode()


WRONG_SHAPES = {
    "empty": (b"", "empty"),
    "whitespace": (b"  \n\t", "empty"),
    "not xml": (b'{"Interfaces": []}', "malformed"),
    "truncated": (SAMPLE[: len(SAMPLE) // 2], "malformed"),
    "binary": (b"\x00\xff\xfe<Interfaces/>", "malformed"),
    "html error page": (b"<html><body>502 Bad Gateway</body></html>", "root element"),
    "no interfaces": (b"<Interfaces/>", "no interfaces"),
    "no mac": (_one(iface='IsPrimary="true"'), "no MacAddress"),
    "bad mac": (_one(iface='MacAddress="not-a-mac" IsPrimary="true"'), "not a MAC"),
    "bad bool": (_one(iface='MacAddress="000D3A51C490" IsPrimary="yes"'), "true/false"),
    "no prefix": (_one(prefix=""), "no Prefix"),
    "bad prefix": (_one(prefix='Prefix="10.240.0.0/33"'), "not a network"),
    "host bits": (_one(prefix='Prefix="10.240.0.5/16"'), "not a network"),
    "bad address": (_one('Address="10.240.0.999" IsPrimary="false"'), "not an IP address"),
    "no address": (_one('IsPrimary="false"'), "no Address"),
    "outside subnet": (_one('Address="10.9.0.36" IsPrimary="false"'), "outside its subnet"),
    "gateway listed": (_one('Address="10.240.0.1" IsPrimary="false"'), "gateway address"),
    "network listed": (_one('Address="10.240.0.0" IsPrimary="false"'), "network address"),
    "broadcast listed": (_one('Address="10.240.255.255" IsPrimary="false"'), "broadcast address"),
    "two primaries": (_one('Address="10.240.0.36" IsPrimary="true"'), "2 primary"),
    "tiny subnet": (b'<Interfaces><Interface MacAddress="000D3A51C490" IsPrimary="true">'
                    b'<IPSubnet Prefix="10.0.0.4/31"><IPAddress Address="10.0.0.4" IsPrimary="true"/>'
                    b'</IPSubnet></Interface></Interfaces>', "too small"),
    "no primary address": (b'<Interfaces><Interface MacAddress="000D3A51C490" IsPrimary="true">'
                           b'<IPSubnet Prefix="10.0.0.0/24"><IPAddress Address="10.0.0.5" IsPrimary="false"/>'
                           b'</IPSubnet></Interface></Interfaces>', "no primary address"),
    "duplicate nic": (two_nics().replace(b"000D3A000002", b"000D3A000001"), "listed twice"),
}


@pytest.mark.parametrize("name", sorted(WRONG_SHAPES))
def test_wrong_shapes_are_metadata_errors(name):
    raw, message = WRONG_SHAPES[name]
    with pytest.raises(MetadataError, match=message):
        pool_from_metadata(raw)


def test_non_bytes_is_an_error():
    with pytest.raises(MetadataError):
        parse_interfaces("<Interfaces/>")  # type: ignore[arg-type]


@given(st.sets(st.integers(min_value=2, max_value=254), max_size=40), st.integers(min_value=2, max_value=254))
def test_render_then_parse_round_trips(hosts, primary_host):
    hosts.discard(primary_host)
    secondaries = [f"10.7.3.{h}" for h in hosts]
    pool = pool_from_metadata(render_node("02:00:00:00:00:01", "10.7.3.0/24", f"10.7.3.{primary_host}", secondaries))
    assert pool.primary == f"10.7.3.{primary_host}" and pool.primary not in pool.addresses
    assert list(pool.addresses) == sorted(secondaries, key=ipaddress.ip_address)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw):
    try:
        pool_from_metadata(raw)
    except MetadataError:
        pass
