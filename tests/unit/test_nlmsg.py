"""nlmsg.py builds the per-pod rtnetlink messages without pyroute2: byte for byte what pyroute2
encodes for the same requests (pyroute2 is the reference here, and the tool of the cold paths)."""

import socket
import struct
import subprocess
import sys

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from vnetcni.dataplane import nlmsg as nl

FLAGS = nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_EXCL


def pyroute2_bytes(msg, mtype: int, flags: int = FLAGS, seq: int = 42) -> bytes:
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def ours(mtype: int, body: bytes, flags: int = FLAGS, seq: int = 42) -> bytes:
    return nl.message(mtype, flags, seq, body)


@pytest.mark.parametrize("master", [7, None])
def test_veth_pair_with_its_peer_in_the_pods_namespace(master):
    msg = ifinfmsg()
    msg["flags"] = msg["change"] = 1
    queues = [("IFLA_NUM_TX_QUEUES", 1), ("IFLA_NUM_RX_QUEUES", 1)]
    peer = [("IFLA_IFNAME", "eth0"), ("IFLA_NET_NS_FD", 5), ("IFLA_MTU", 1450), ("IFLA_ADDRESS", "02:aa:bb:cc:dd:02"),
            *queues]
    msg["attrs"] = [("IFLA_IFNAME", "azv5a6822c76a3"), ("IFLA_MTU", 1450), ("IFLA_ADDRESS", "02:aa:bb:cc:dd:01"),
                    *queues,
                    *([("IFLA_MASTER", master)] if master else []),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [
                        ("VETH_INFO_PEER", {"attrs": peer})]})]})]
    body = nl.veth_pair("azv5a6822c76a3", "eth0", 5, 1450, "02:aa:bb:cc:dd:01", "02:aa:bb:cc:dd:02", master)
    assert ours(nl.RTM_NEWLINK, body) == pyroute2_bytes(msg, nl.RTM_NEWLINK)


@pytest.mark.parametrize("on", [True, False])
def test_hairpin_on_a_bridge_port(on):
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", "azvport"), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_SLAVE_KIND", "bridge"), ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", int(on))]})]})]
    flags = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    assert ours(nl.RTM_NEWLINK, nl.port_mode("azvport", on), flags) == pyroute2_bytes(msg, nl.RTM_NEWLINK, flags)


def test_no_automatic_ipv6_address_on_a_link():
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", "azvport"), ("IFLA_AF_SPEC", {"attrs": [
        ("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", nl.IN6_ADDR_GEN_MODE_NONE)]})]})]
    flags = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    assert ours(nl.RTM_NEWLINK, nl.no_ipv6_autoconf("azvport"), flags) == pyroute2_bytes(msg, nl.RTM_NEWLINK, flags)


def test_the_same_mac_again():
    msg = ifinfmsg()
    msg["index"] = 12
    msg["attrs"] = [("IFLA_ADDRESS", "02:aa:bb:cc:dd:02")]
    flags = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    assert ours(nl.RTM_NEWLINK, nl.same_address(12, "02:aa:bb:cc:dd:02"), flags) == \
        pyroute2_bytes(msg, nl.RTM_NEWLINK, flags)


def test_link_up_get_and_delete():
    up = ifinfmsg()
    up["index"], up["flags"], up["change"] = 12, 1, 1
    assert ours(nl.RTM_NEWLINK, nl.link_up(12)) == pyroute2_bytes(up, nl.RTM_NEWLINK)
    for mtype in (nl.RTM_GETLINK, nl.RTM_DELLINK):
        by_name = ifinfmsg()
        by_name["attrs"] = [("IFLA_IFNAME", "azv1")]
        assert ours(mtype, nl.link_by_name("azv1")) == pyroute2_bytes(by_name, mtype)


@pytest.mark.parametrize("address,prefixlen", [("10.240.0.36", 16), ("10.240.0.36", 32), ("fd00:10::24", 64),
                                               ("fd00:10::24", 128)])
def test_addresses(address, prefixlen):
    msg = ifaddrmsg()
    v6 = ":" in address
    msg["family"] = socket.AF_INET6 if v6 else socket.AF_INET
    msg["prefixlen"], msg["index"] = prefixlen, 3
    if v6:
        msg["flags"] = nl.IFA_F_NODAD
    msg["attrs"] = [("IFA_ADDRESS", address)] if v6 else [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    assert ours(nl.RTM_NEWADDR, nl.new_address(3, address, prefixlen)) == pyroute2_bytes(msg, nl.RTM_NEWADDR)


@pytest.mark.parametrize("dst,dst_len,gateway", [("0.0.0.0", 0, "10.240.0.1"), ("169.254.1.1", 32, ""),
                                                 ("10.96.0.0", 12, "169.254.1.1"), ("::", 0, "fe80::1"),
                                                 ("fd00:10::24", 128, "")])
def test_routes(dst, dst_len, gateway):
    msg = rtmsg()
    msg["family"] = socket.AF_INET6 if ":" in dst else socket.AF_INET
    msg["dst_len"], msg["table"], msg["proto"], msg["type"] = dst_len, 254, 3, 1
    msg["scope"] = 0 if gateway else 253
    attrs = [("RTA_OIF", 9)]
    if dst_len:
        attrs.append(("RTA_DST", dst))
    if gateway:
        attrs.append(("RTA_GATEWAY", gateway))
    msg["attrs"] = attrs
    assert ours(nl.RTM_NEWROUTE, nl.new_route(9, dst, dst_len, gateway)) == pyroute2_bytes(msg, nl.RTM_NEWROUTE)


@pytest.mark.parametrize("address", ["169.254.1.1", "fe80::1", "fd00:10::24"])
def test_permanent_neighbours(address):
    msg = ndmsg()
    msg["family"] = socket.AF_INET6 if ":" in address else socket.AF_INET
    msg["ifindex"], msg["state"] = 4, nl.NUD_PERMANENT
    msg["attrs"] = [("NDA_DST", address), ("NDA_LLADDR", "02:aa:bb:cc:dd:01")]
    flags = nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_REPLACE
    body = nl.permanent_neighbour(4, address, "02:aa:bb:cc:dd:01")
    assert ours(nl.RTM_NEWNEIGH, body, flags) == pyroute2_bytes(msg, nl.RTM_NEWNEIGH, flags)


def test_decoding_a_bridge_link_as_pyroute2_encodes_it():
    msg = ifinfmsg()
    msg["index"], msg["flags"] = 17, 1 | 0x1000
    msg["attrs"] = [("IFLA_IFNAME", "azure0"), ("IFLA_ADDRESS", "02:12:34:56:78:9a"), ("IFLA_MTU", 1500),
                    ("IFLA_MASTER", 3),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge"),
                                                ("IFLA_INFO_DATA", {"attrs": [("IFLA_BR_NF_CALL_IPTABLES", 1)]})]})]
    link = nl.Link(pyroute2_bytes(msg, nl.RTM_NEWLINK)[nl.HEADER.size:])
    assert (link.index, link.up, link.name, link.mac, link.mtu, link.master, link.kind) == (
        17, True, "azure0", "02:12:34:56:78:9a", 1500, 3, "bridge")
    assert nl.uint(link.info_data()[nl.IFLA_BR_NF_CALL_IPTABLES]) == 1


@pytest.mark.parametrize("address,family", [("10.240.0.1", socket.AF_INET), ("fd00:10::1", socket.AF_INET6)])
def test_decoding_an_address(address, family):
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["scope"], msg["index"] = family, 16, 0, 5
    msg["attrs"] = [("IFA_ADDRESS", address)] + ([("IFA_LOCAL", address)] if family == socket.AF_INET else [])
    a = nl.Address(pyroute2_bytes(msg, nl.RTM_NEWADDR)[nl.HEADER.size:])
    assert (a.family, a.prefixlen, a.scope, a.index, a.address) == (family, 16, 0, 5, address)


def test_attributes_stop_at_a_malformed_length():
    good = nl.u32(nl.IFLA_MTU, 1500)
    assert nl.attrs(good + struct.pack("=HH", 2, 9) + b"junk") == {nl.IFLA_MTU: struct.pack("=I", 1500)}


def test_the_per_pod_dataplane_imports_no_pyroute2():
    """What a plugin process loads for an ADD or DEL (the fallback without vnetd pays for every
    import on every pod event): pyroute2 only on the cold paths."""
    code = ("import sys, vnetcni.plugins.vnet, vnetcni.dataplane.linux, vnetcni.dataplane.rtnl; "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=60).stdout.split())
    assert "vnetcni.dataplane.linux" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("pyroute2", "asyncio", "multiprocessing")}


def test_a_bridge_and_its_br_netfilter_switch():
    new = ifinfmsg()
    new["attrs"] = [("IFLA_IFNAME", "azure0"), ("IFLA_MTU", 1500), ("IFLA_ADDRESS", "02:aa:bb:cc:dd:03"),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})]
    assert ours(nl.RTM_NEWLINK, nl.bridge("azure0", 1500, "02:aa:bb:cc:dd:03")) == pyroute2_bytes(new, nl.RTM_NEWLINK)
    nf = ifinfmsg()
    nf["index"] = 9
    nf["attrs"] = [("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge"), ("IFLA_INFO_DATA", {"attrs": [
        ("IFLA_BR_NF_CALL_IPTABLES", 1), ("IFLA_BR_MCAST_SNOOPING", 0)]})]})]
    flags = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    assert ours(nl.RTM_NEWLINK, nl.bridge_settings(9), flags) == pyroute2_bytes(nf, nl.RTM_NEWLINK, flags)
