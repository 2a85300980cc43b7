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
    status: str = ""   # what happened to the flow: one of STATUSES

    @property
    def refused(self) -> bool:
        return self.status == REFUSED

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
            "lastSeen": last, "complete": self.complete, "status": self.status, "verdict": self.verdict,
        }


# What happened to the flow (report.status); the CLI maps each to an exit code.
DELIVERED = "delivered"          # reached the destination and it answered (SYN-ACK, echo reply)
REFUSED = "refused"              # reached the destination, which reset the connection: nothing listens
RESET_ON_THE_WAY = "reset"       # a hop before the destination answered with a reset
LOST = "lost"                    # last seen on a hop before the destination
UNANSWERED = "unanswered"        # reached the destination's hop, no reply came back
REPLY_LOST = "reply lost"        # the reply was lost on its way back
NOT_SENT = "not sent"            # never seen, not even on the pod's own side
STATUSES = (DELIVERED, REFUSED, RESET_ON_THE_WAY, LOST, UNANSWERED, REPLY_LOST, NOT_SENT)

# The TCP flags as the report shows them (one letter each, in this order; "." for none).
TCP_FLAG_LEGEND = "TCP flags: S SYN, A ACK, R RST (reset), F FIN, P PSH; SA = SYN-ACK, RA = RST-ACK"


def _resets(kinds: list[str]) -> bool:
    """Every reply of the flow was a TCP reset (an answer, but a refusal)."""
    return bool(kinds) and all("R" in k for k in kinds)


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
        report.status = NOT_SENT
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
        nearest_reply = min(rep_seen) if rep_seen else None
        if nearest_reply is not None and _resets(hops[nearest_reply].reply_kinds) and nearest_reply <= furthest:
            report.status = RESET_ON_THE_WAY
            report.last_seen, report.last_seen_direction = hops[furthest], "forward"
            report.verdict = (f"reset on the way: last seen on {hops[furthest].hop.label} "
                              f"({hops[furthest].hop.role}), never reached {hops[furthest + 1].hop.label}; "
                              f"a TCP reset came back from there (a firewall or the node rejected it){gaps}")
            return
        report.status = LOST
        report.verdict = (f"lost after {hops[furthest].hop.label} ({hops[furthest].hop.role}): "
                          f"last seen there, never reached {hops[furthest + 1].hop.label}{gaps}")
        return
    if not rep_seen:
        report.status = UNANSWERED
        report.verdict = (f"reached {hops[last].hop.label} ({hops[last].hop.role}) but no reply "
                          f"came back{gaps}")
        return
    nearest = min(rep_seen)
    if nearest > 0:
        report.status = REPLY_LOST
        report.last_seen, report.last_seen_direction = hops[nearest], "reply"
        report.verdict = (f"reached {hops[last].hop.label}; the reply was last seen on "
                          f"{hops[nearest].hop.label} and never reached {hops[nearest - 1].hop.label}")
        return
    report.last_seen, report.last_seen_direction = hops[0], "reply"
    if report.protocol == "tcp" and _resets(hops[0].reply_kinds) and not _resets(hops[last].reply_kinds):
        report.status = RESET_ON_THE_WAY
        report.verdict = (f"reset on the way: the flow reached {hops[last].hop.label}, but the TCP reset that "
                          f"came back was not sent from there (a firewall or the node rejected it){gaps}")
        return
    if report.protocol == "tcp" and _resets(hops[last].reply_kinds):
        report.status = REFUSED
        where = (f"pod {report.dest.pod.name}" if report.dest.pod is not None
                 else f"{report.dest.address}")
        report.verdict = (f"reached {where} ({hops[last].hop.label}), but nothing listens on "
                          f":{report.dest.port}: it answered with a TCP reset (RST), the connection was refused"
                          f"{gaps}")
        return
    report.status = DELIVERED
    report.complete = True
    report.verdict = f"delivered and answered: seen on every hop in both directions{gaps}"
