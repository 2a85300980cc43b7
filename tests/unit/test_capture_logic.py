"""Pure parts of capture/trace: pcap reading, endpoint matching, fabric parsing, flow filters,
hop classification and the verdict."""

from __future__ import annotations

import io
import struct

import pytest

from vnetcni.capture import pcap
from vnetcni.capture.discovery import HostSide
from vnetcni.capture.endpoints import match_records, single_record, split_pod_name
from vnetcni.capture.errors import BadInput, PodNotFound
from vnetcni.capture.hops import Destination, Hop
from vnetcni.capture.nodes import Node, parse_fabric
from vnetcni.capture.resolve import Pod
from vnetcni.capture.verdict import HopResult, TraceReport, classify, flow_filter, judge
from vnetcni.cli.capture_cmds import _parse_to

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, flags: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, flags, 0, 0, 0)
    return MAC_B + MAC_A + b"\x08\x00" + ip + tcp


def arp(op: int, sender: str, target: str) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, MAC_A,
                       bytes(map(int, sender.split("."))), b"\0" * 6, bytes(map(int, target.split("."))))
    return b"\xff" * 6 + MAC_A + b"\x08\x06" + body


def pcap_bytes(frames: list[bytes], magic: bytes = b"\xd4\xc3\xb2\xa1", linktype: int = 1) -> bytes:
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out = magic + struct.pack(order + "HHiIII", 2, 4, 0, 0, 262144, linktype)
    for i, frame in enumerate(frames):
        out += struct.pack(order + "IIII", 100 + i, 5, len(frame), len(frame)) + frame
    return out


@pytest.mark.parametrize("magic", [b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1"])
def test_pcap_reader_decodes_tcp_and_arp(magic):
    data = pcap_bytes([ipv4_tcp("10.0.0.5", "10.0.0.7", 4000, 80, 0x02), arp(1, "10.0.0.5", "10.0.0.7")],
                      magic)
    f = pcap.read_pcap(io.BytesIO(data))
    assert f.linktype == 1 and len(f.records) == 2
    tcp, req = (pcap.decode(r) for r in f.records)
    assert (tcp.src, tcp.dst, tcp.sport, tcp.dport, tcp.tcp_flags) == ("10.0.0.5", "10.0.0.7", 4000, 80, "S")
    assert (req.proto, req.arp_op, req.src, req.dst) == ("arp", 1, "10.0.0.5", "10.0.0.7")


def test_pcap_reader_ignores_a_truncated_tail_and_rejects_garbage():
    data = pcap_bytes([ipv4_tcp("10.0.0.5", "10.0.0.7", 1, 2, 0x10)] * 2)
    assert len(pcap.read_pcap(io.BytesIO(data[:-5])).records) == 1
    with pytest.raises(pcap.PcapFormatError):
        pcap.read_pcap(io.BytesIO(b"not a pcap file at all, no"))
    with pytest.raises(pcap.PcapFormatError):
        pcap.read_pcap(io.BytesIO(b""))
    assert pcap.decode(pcap.Record(0.0, b"\x01\x02", 2)).proto is None


RECORDS = [
    {"containerId": "abc123def456", "ifName": "eth0", "podName": "web", "podNamespace": "a",
     "ips": ["10.0.0.5/24"], "hostIfName": "azv1"},
    {"containerId": "abc999000111", "ifName": "eth0", "podName": "web", "podNamespace": "b",
     "ips": ["10.0.0.6/24", "fd00::6/64"], "hostIfName": "azv2"},
    {"containerId": "fff000111222", "ifName": "eth0", "podName": "db", "podNamespace": "a",
     "ips": ["10.0.0.7/24"], "hostIfName": "azv3"},
]


@pytest.mark.parametrize("query, ns, expected", [
    ("db", None, ["azv3"]), ("web", "b", ["azv2"]), ("b/web", None, ["azv2"]), ("web", None, ["azv1", "azv2"]),
    ("10.0.0.6", None, ["azv2"]), ("fd00::6", None, ["azv2"]), ("abc123def456", None, ["azv1"]),
    ("fff0", None, ["azv3"]), ("abc", None, []), ("abc9", None, ["azv2"]), ("nope", None, []),
    ("10.0.0.99", None, []),
])
def test_records_match_by_name_address_and_container_id(query, ns, expected):
    assert [r["hostIfName"] for r in match_records(RECORDS, query, ns)] == expected


def test_ambiguous_matches_and_conflicting_namespaces_are_bad_input():
    with pytest.raises(BadInput, match="matches 2 endpoints"):
        single_record(match_records(RECORDS, "web", None), "web")
    with pytest.raises(BadInput, match="-n says"):
        split_pod_name("a/web", "b")
    assert split_pod_name("/run/netns/x", None) == ("/run/netns/x", None)


def test_fabric_json_is_parsed_tolerantly():
    fabric = parse_fabric({"name": "f", "fabricNetns": "vsim-f-fabric", "fabricBridge": "vnet0",
                           "gateway": "10.0.0.1", "nodes": [
                               {"name": "node1", "netns": "vsim-f-node1", "primary": "10.0.0.4",
                                "eth0": "eth0", "fabricPort": "p-node1", "stateDir": "/s1"},
                               {"name": "node2", "netns": "/run/netns/other", "stateDir": "/s2"}]}, "x")
    n1, n2 = fabric.nodes
    assert (n1.netns, n1.uplink, n1.fabric_port, n1.primary, n1.bridge) == (
        "/run/netns/vsim-f-node1", "eth0", "p-node1", "10.0.0.4", "azure0")
    assert n2.netns == "/run/netns/other" and fabric.netns == "/run/netns/vsim-f-fabric"
    assert fabric.node("node2") is n2
    with pytest.raises(PodNotFound, match="no node 'node3'"):
        fabric.node("node3")
    with pytest.raises(BadInput):
        parse_fabric({"nodes": [{"name": "x"}]}, "x")


def test_flow_filter_names_the_flow_and_its_arp():
    assert flow_filter("10.0.0.5", "10.0.0.7", 80, 4000) == (
        "(host 10.0.0.5 and host 10.0.0.7 and ((tcp port 80 and tcp port 4000) or icmp)) "
        "or (arp and (host 10.0.0.7 or host 10.0.0.5))")
    assert flow_filter("fd00::5", "fd00::7", None, None) == "(host fd00::5 and host fd00::7 and icmp6)"


@pytest.mark.parametrize("text, expected", [("10.0.0.7:80", ("10.0.0.7", 80)), ("10.0.0.7", ("10.0.0.7", None)),
                                            ("[fd00::7]:443", ("fd00::7", 443)), ("fd00::7", ("fd00::7", None))])
def test_to_address_and_port(text, expected):
    assert _parse_to(text) == expected


@pytest.mark.parametrize("text", ["10.0.0.7:0", "10.0.0.7:x", "web:80", "10.0.0.0/24"])
def test_bad_to_is_bad_input(text):
    with pytest.raises(BadInput):
        _parse_to(text)


def _hop_results(pattern: list[tuple[int, int]]) -> list[HopResult]:
    return [HopResult(Hop("n", None, f"if{i}", "r"), forward=f, reply=r) for i, (f, r) in enumerate(pattern)]


def _report(pattern) -> TraceReport:
    source = Pod("default/web", Node("n", None, "/s"), HostSide("if0", 5, "azure0", "endpoint state", ""))
    report = TraceReport(source, "10.0.0.5", Destination("10.0.0.7", 80), "tcp", 4000, None,
                         _hop_results(pattern))
    judge(report)
    return report


def test_classify_counts_each_direction_of_the_flow_only():
    frames = [ipv4_tcp("10.0.0.5", "10.0.0.7", 4000, 80, 0x02), ipv4_tcp("10.0.0.7", "10.0.0.5", 80, 4000, 0x12),
              ipv4_tcp("10.0.0.5", "10.0.0.7", 4001, 80, 0x02), arp(1, "10.0.0.5", "10.0.0.7"),
              arp(2, "10.0.0.7", "10.0.0.5")]
    result = HopResult(Hop("n", None, "x", "r"))
    classify(result, [pcap.decode(pcap.Record(0, f, len(f))) for f in frames], "10.0.0.5", "10.0.0.7", 80, 4000)
    assert (result.forward, result.reply, result.forward_kinds, result.reply_kinds) == (1, 1, ["S"], ["SA"])
    assert (result.arp_requests, result.arp_replies) == (1, 1)


def test_verdicts_name_the_last_hop():
    complete = _report([(1, 1)] * 4)
    assert complete.complete and complete.verdict.startswith("delivered and answered")
    lost = _report([(1, 0), (1, 0), (0, 0), (0, 0)])
    assert not lost.complete and lost.last_seen is lost.hops[1] and lost.last_seen_direction == "forward"
    assert lost.verdict.startswith("lost after n:if1") and "never reached n:if2" in lost.verdict
    unanswered = _report([(1, 0)] * 3)
    assert unanswered.verdict.startswith("reached n:if2") and "no reply" in unanswered.verdict
    reply_lost = _report([(1, 0), (1, 1), (1, 1)])
    assert reply_lost.last_seen is reply_lost.hops[1] and reply_lost.last_seen_direction == "reply"
    never = _report([(0, 0)] * 2)
    assert never.last_seen is None and "never left the pod" in never.verdict
    assert never.to_json()["lastSeen"] is None and never.to_json()["source"]["pod"] == "default/web"


def _tcp_report(pattern, reply_kinds) -> TraceReport:
    source = Pod("default/web", Node("n", None, "/s"), HostSide("if0", 5, "azure0", "endpoint state", ""))
    hops = _hop_results(pattern)
    for h, kinds in zip(hops, reply_kinds):
        h.reply_kinds = list(kinds)
    report = TraceReport(source, "10.0.0.5", Destination("10.0.0.7", 8080), "tcp", 4000, None, hops)
    judge(report)
    return report


def test_a_reset_from_the_destination_is_refused_not_delivered():
    refused = _tcp_report([(1, 1)] * 3, [["RA"]] * 3)
    assert not refused.complete and refused.status == "refused" and refused.refused
    assert "nothing listens on :8080" in refused.verdict and "RST" in refused.verdict
    assert refused.to_json()["status"] == "refused"
    answered = _tcp_report([(1, 1)] * 3, [["SA", "A"]] * 3)
    assert answered.complete and answered.status == "delivered"
    reset_between = _tcp_report([(1, 1), (1, 1), (1, 0)], [["RA"], ["RA"], []])
    assert not reset_between.complete and reset_between.status == "reset"


def test_trace_exit_codes_tell_refused_from_lost_and_delivered():
    from vnetcni.cli.capture_cmds import trace_exit_code

    assert trace_exit_code(_tcp_report([(1, 1)] * 3, [["SA"]] * 3)) == 0
    assert trace_exit_code(_tcp_report([(1, 1)] * 3, [["RA"]] * 3)) == 9
    assert trace_exit_code(_tcp_report([(1, 0), (0, 0), (0, 0)], [[], [], []])) == 8
