"""What a trace saw: per hop, the flow's packets in each direction (and the ARP before it), and
the verdict: where the flow was last seen and what that means.

Kept apart from the capturing (trace.py) so it is pure and tested without namespaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import pcap
from .flow import FlowOutcome
from .hops import Destination, Hop
from .resolve import Pod


@dataclass
class HopResult:
    hop: Hop
    forward: int = 0
    reply: int = 0
    arp_requests: int = 0
    arp_replies: int = 0
    forward_kinds: list[str] = field(default_factory=list)
    reply_kinds: list[str] = field(default_factory=list)
    error: str = ""

    def to_json(self, index: int) -> dict:
        return {"index": index, "node": self.hop.node, "interface": self.hop.interface,
                "role": self.hop.role, "forward": self.forward, "reply": self.reply,
                "forwardKinds": self.forward_kinds, "replyKinds": self.reply_kinds,
                "arpRequests": self.arp_requests, "arpReplies": self.arp_replies,
                "seen": bool(self.forward or self.reply), "error": self.error or None}


@dataclass
class TraceReport:
    source: Pod
    source_address: str
    dest: Destination
    protocol: str
    source_port: int | None
    outcome: FlowOutcome | None
    hops: list[HopResult]
    verdict: str = ""
    last_seen: HopResult | None = None
    last_seen_direction: str = ""
    complete: bool = False

    def to_json(self) -> dict:
        last = None
        if self.last_seen is not None:
            last = {"index": self.hops.index(self.last_seen), "node": self.last_seen.hop.node,
                    "interface": self.last_seen.hop.interface, "role": self.last_seen.hop.role,
                    "direction": self.last_seen_direction}
        return {
            "source": {"pod": self.source.name, "node": self.source.node.name,
                       "address": self.source_address, "port": self.source_port},
            "destination": {"address": self.dest.address, "port": self.dest.port,
                            "pod": self.dest.pod.name if self.dest.pod else None,
                            "node": self.dest.node.name if self.dest.node else None},
            "protocol": self.protocol,
            "generated": None if self.outcome is None else
            {"result": self.outcome.result, "answered": self.outcome.answered},
            "hops": [h.to_json(i) for i, h in enumerate(self.hops)],
            "lastSeen": last, "complete": self.complete, "verdict": self.verdict,
        }


def flow_filter(src: str, dst: str, port: int | None, sport: int | None) -> str:
    """The BPF filter of one flow, plus the ARP that must precede it."""
    v6 = ":" in dst
    hosts = f"host {src} and host {dst}"
    if port is not None:
        ports = f"tcp port {port}" + (f" and tcp port {sport}" if sport else "")
        ip_part = f"({hosts} and (({ports}) or {'icmp6' if v6 else 'icmp'}))"
    else:
        ip_part = f"({hosts} and {'icmp6' if v6 else 'icmp'})"
    return ip_part if v6 else f"{ip_part} or (arp and (host {dst} or host {src}))"


def classify(result: HopResult, packets: list[pcap.Packet], src: str, dst: str,
             port: int | None, sport: int | None) -> None:
    for p in packets:
        if p.proto == "arp":
            if p.arp_op == 1 and p.dst in (dst, src):
                result.arp_requests += 1
            elif p.arp_op == 2 and p.src in (dst, src):
                result.arp_replies += 1
            continue
        if port is not None and p.proto == "tcp":
            fwd = p.src == src and p.dst == dst and p.dport == port and (sport is None or p.sport == sport)
            rev = p.src == dst and p.dst == src and p.sport == port and (sport is None or p.dport == sport)
            kind = p.tcp_flags or "."
        elif p.proto in ("icmp", "icmp6"):
            fwd, rev, kind = p.src == src and p.dst == dst, p.src == dst and p.dst == src, p.proto
        else:
            continue
        if fwd:
            result.forward += 1
            if kind not in result.forward_kinds:
                result.forward_kinds.append(kind)
        elif rev:
            result.reply += 1
            if kind not in result.reply_kinds:
                result.reply_kinds.append(kind)


def judge(report: TraceReport) -> None:
    """Where the flow was last seen, and a sentence saying what happened to it."""
    hops = report.hops
    fwd_seen = [i for i, h in enumerate(hops) if h.forward]
    rep_seen = [i for i, h in enumerate(hops) if h.reply]
    last = len(hops) - 1
    if not fwd_seen:
        report.verdict = (f"the flow was not seen on any hop, not even {hops[0].hop.label} "
                          "(the pod's own side): it never left the pod")
        if hops and hops[0].arp_requests and not hops[0].arp_replies:
            report.verdict += f"; ARP for {report.dest.address} went unanswered"
        return
    furthest = max(fwd_seen)
    report.last_seen, report.last_seen_direction = hops[furthest], "forward"
    missing = [hops[i].hop.label for i in range(furthest) if not hops[i].forward]
    gaps = f" (not seen on {', '.join(missing)})" if missing else ""
    if furthest < last:
        report.verdict = (f"lost after {hops[furthest].hop.label} ({hops[furthest].hop.role}): "
                          f"last seen there, never reached {hops[furthest + 1].hop.label}{gaps}")
        return
    if not rep_seen:
        report.verdict = (f"reached {hops[last].hop.label} ({hops[last].hop.role}) but no reply "
                          f"came back{gaps}")
        return
    nearest = min(rep_seen)
    if nearest > 0:
        report.last_seen, report.last_seen_direction = hops[nearest], "reply"
        report.verdict = (f"reached {hops[last].hop.label}; the reply was last seen on "
                          f"{hops[nearest].hop.label} and never reached {hops[nearest - 1].hop.label}")
        return
    report.last_seen, report.last_seen_direction = hops[0], "reply"
    report.complete = True
    report.verdict = f"delivered and answered: seen on every hop in both directions{gaps}"
