"""A small reader for the classic pcap files tcpdump writes, and a decoder of the headers a trace
needs (Ethernet, 802.1Q, ARP, IPv4/IPv6, TCP/UDP/ICMP).

Why our own: trace must count a flow's packets per hop without another dependency or another
tcpdump run per file, and tests check what a capture holds byte for byte.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

LINKTYPE_ETHERNET = 1
_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}


class PcapFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Record:
    timestamp: float
    data: bytes
    wire_length: int


@dataclass(frozen=True)
class Packet:
    """What a trace cares about in one frame; fields are None when the frame has no such layer."""

    timestamp: float
    src_mac: str
    dst_mac: str
    ethertype: int
    src: str | None = None
    dst: str | None = None
    proto: str | None = None          # "tcp", "udp", "icmp", "icmp6", "arp", or None
    sport: int | None = None
    dport: int | None = None
    tcp_flags: str = ""               # e.g. "S", "SA", "R", "FA"
    arp_op: int | None = None         # 1 request, 2 reply


@dataclass(frozen=True)
class PcapFile:
    linktype: int
    records: list[Record]


def read_pcap(stream: BinaryIO) -> PcapFile:
    """All records of a pcap stream; a truncated last record (capture killed mid-write) is ignored."""
    header = stream.read(24)
    if len(header) == 0:
        raise PcapFormatError("empty file: no pcap header")
    if len(header) < 24 or header[:4] not in _MAGICS:
        raise PcapFormatError("not a pcap file (bad magic)")
    order, ticks = _MAGICS[header[:4]]
    linktype = struct.unpack(order + "I", header[20:24])[0] & 0x0FFFFFFF
    return PcapFile(linktype, list(_records(stream, order, ticks)))


def _records(stream: BinaryIO, order: str, ticks: int) -> Iterator[Record]:
    while True:
        head = stream.read(16)
        if len(head) < 16:
            return
        sec, frac, caplen, wirelen = struct.unpack(order + "IIII", head)
        data = stream.read(caplen)
        if len(data) < caplen:
            return
        yield Record(sec + frac / ticks, data, wirelen)


def read_pcap_path(path: str) -> PcapFile:
    with open(path, "rb") as f:
        return read_pcap(f)


def count_records(path: str) -> int:
    """Packets in a pcap file; 0 for a file tcpdump has not written its header to yet."""
    try:
        return len(read_pcap_path(path).records)
    except (PcapFormatError, FileNotFoundError):
        return 0


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


_TCP_FLAGS = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("A", 0x10))


def decode(record: Record) -> Packet:
    """Decode one Ethernet frame (never raises: unknown or short layers are left as None)."""
    data = record.data
    if len(data) < 14:
        return Packet(record.timestamp, "", "", 0)
    dst_mac, src_mac = _mac(data[0:6]), _mac(data[6:12])
    ethertype = struct.unpack("!H", data[12:14])[0]
    offset = 14
    while ethertype in (0x8100, 0x88A8) and len(data) >= offset + 4:
        ethertype = struct.unpack("!H", data[offset + 2:offset + 4])[0]
        offset += 4
    base = dict(timestamp=record.timestamp, src_mac=src_mac, dst_mac=dst_mac, ethertype=ethertype)
    payload = data[offset:]
    if ethertype == 0x0806:
        return _arp(payload, base)
    if ethertype == 0x0800:
        return _ipv4(payload, base)
    if ethertype == 0x86DD:
        return _ipv6(payload, base)
    return Packet(**base)


def _arp(p: bytes, base: dict) -> Packet:
    if len(p) < 28:
        return Packet(**base, proto="arp")
    op = struct.unpack("!H", p[6:8])[0]
    sender = str(ipaddress.IPv4Address(p[14:18]))
    target = str(ipaddress.IPv4Address(p[24:28]))
    return Packet(**base, src=sender, dst=target, proto="arp", arp_op=op)


def _ipv4(p: bytes, base: dict) -> Packet:
    if len(p) < 20:
        return Packet(**base)
    ihl = (p[0] & 0x0F) * 4
    proto_num = p[9]
    src, dst = str(ipaddress.IPv4Address(p[12:16])), str(ipaddress.IPv4Address(p[16:20]))
    return _transport(proto_num, p[ihl:], base, src, dst)


def _ipv6(p: bytes, base: dict) -> Packet:
    if len(p) < 40:
        return Packet(**base)
    src, dst = str(ipaddress.IPv6Address(p[8:24])), str(ipaddress.IPv6Address(p[24:40]))
    return _transport(p[6], p[40:], base, src, dst)


def _transport(proto_num: int, seg: bytes, base: dict, src: str, dst: str) -> Packet:
    if proto_num == 6 and len(seg) >= 14:
        sport, dport = struct.unpack("!HH", seg[0:4])
        flags = "".join(name for name, bit in _TCP_FLAGS if seg[13] & bit)
        return Packet(**base, src=src, dst=dst, proto="tcp", sport=sport, dport=dport, tcp_flags=flags)
    if proto_num == 17 and len(seg) >= 4:
        sport, dport = struct.unpack("!HH", seg[0:4])
        return Packet(**base, src=src, dst=dst, proto="udp", sport=sport, dport=dport)
    if proto_num in (1, 58):
        return Packet(**base, src=src, dst=dst, proto="icmp" if proto_num == 1 else "icmp6")
    return Packet(**base, src=src, dst=dst)


def packets(path: str) -> list[Packet]:
    """Every frame of an Ethernet pcap file, decoded."""
    pcap = read_pcap_path(path)
    if pcap.linktype != LINKTYPE_ETHERNET:
        raise PcapFormatError(f"link type {pcap.linktype}, expected Ethernet (1)")
    return [decode(r) for r in pcap.records]
