"""`vnetctl trace`: capture at once on every hop of a pod's flow, make (or wait for) the flow,
and say hop by hop where it was seen and where it was last seen: "where did my packet go".

Every capture is bounded: tcpdump is started on each hop and we wait until all of them say they
are listening before the flow is made; afterwards we wait until the capture files stop growing
(or a short limit), then stop them all with SIGINT and read the pcaps back.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from typing import Callable

from . import pcap
from .engine import Tcpdump
from .errors import BadInput, CaptureError
from .flow import IcmpProbe, TcpProbe
from .hops import Destination, Hop
from .resolve import Pod
from .verdict import HopResult, TraceReport, classify, flow_filter, judge

SETTLE_QUIET = 0.4     # the capture files stopped growing for this long: the flow is over
SETTLE_LIMIT = 3.0


def _source_address(source: Pod, dest: str) -> str:
    want_v6 = ":" in dest
    for ip in source.host.ips:
        if (":" in ip) == want_v6:
            return ip
    raise BadInput(f"pod {source.name} has no IPv{'6' if want_v6 else '4'} address to reach {dest} from")


class _Captures:
    """One tcpdump per hop, each writing its own pcap file in `directory`."""

    def __init__(self, hops: list[Hop], directory: str, bpf_filter: str) -> None:
        self.files = [os.path.join(directory, f"{i:02d}-{h.node}-{h.interface}.pcap")
                      for i, h in enumerate(hops)]
        self.hops = hops
        self.bpf_filter = bpf_filter
        self.dumps: list[Tcpdump] = []

    def start(self) -> None:
        """Start every capture and return once all of them are listening."""
        for hop, path in zip(self.hops, self.files):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                dump = Tcpdump(hop.interface, fd, self.bpf_filter, None, hop.netns)
                self.dumps.append(dump)
                dump.start()
            finally:
                os.close(fd)  # tcpdump has its own copy
        for dump in self.dumps:
            dump.wait_listening()

    def sizes(self) -> list[int]:
        return [os.path.getsize(f) if os.path.exists(f) else 0 for f in self.files]

    def settle(self, quiet: float = SETTLE_QUIET, limit: float = SETTLE_LIMIT) -> None:
        """Wait until no capture file has grown for `quiet` seconds (at most `limit`)."""
        deadline = time.monotonic() + limit
        last, since = self.sizes(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.sizes()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return

    def stop(self) -> list[str]:
        """Stop every capture (SIGINT, so each flushes its file); each one's error, if any."""
        for dump in self.dumps:
            dump.interrupt()
        errors = []
        for dump in self.dumps:
            stats = dump.finish()
            errors.append("" if stats.returncode in (0, -signal.SIGINT) else dump.error_text())
        return errors

    def kill(self) -> None:
        for dump in self.dumps:
            dump.kill()


def run_trace(source: Pod, dest: Destination, hops: list[Hop], wait: float | None = None,
              timeout: float = 2.0, keep_dir: str | None = None,
              say: Callable[[str], None] = lambda _m: None) -> TraceReport:
    src_ip = _source_address(source, dest.address)
    if wait is None and not source.host.pod_netns:
        raise BadInput(f"the network namespace of pod {source.name} is unknown, so the flow cannot "
                       "be made from inside it", "use --wait SECONDS and make the flow yourself")
    directory = keep_dir or tempfile.mkdtemp(prefix="vnetctl-trace-")
    probe = None
    captures = None
    try:
        os.makedirs(directory, exist_ok=True)
        if wait is None:
            probe = (TcpProbe(source.host.pod_netns, src_ip, dest.address, dest.port)
                     if dest.port is not None else IcmpProbe(source.host.pod_netns, src_ip, dest.address))
        sport = probe.source_port if isinstance(probe, TcpProbe) else None
        captures = _Captures(hops, directory, flow_filter(src_ip, dest.address, dest.port, sport))
        captures.start()
        say(f"listening on {len(hops)} hops: {', '.join(h.label for h in hops)}")
        outcome = None
        if probe is not None:
            say(f"sending {'a TCP connect' if dest.port else 'an ICMP echo'} from {source.name} "
                f"({src_ip}) to {dest.description}")
            outcome = probe.run(timeout)
            probe = None
            captures.settle()
        else:
            _wait_for_flow(captures, wait, src_ip, dest)
        errors = captures.stop()
        results = []
        for hop, path, error in zip(hops, captures.files, errors):
            result = HopResult(hop, error=error)
            try:
                classify(result, pcap.packets(path), src_ip, dest.address, dest.port, sport)
            except pcap.PcapFormatError as exc:
                result.error = result.error or f"unreadable capture: {exc}"
            results.append(result)
        captures = None
    finally:
        if probe is not None:
            probe.close()
        if captures is not None:
            captures.kill()
        if keep_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    report = TraceReport(source, src_ip, dest, "tcp" if dest.port is not None else "icmp", sport,
                         outcome, results)
    judge(report)
    return report


def _wait_for_flow(captures: _Captures, seconds: float, src: str, dest: Destination) -> None:
    """Listen up to `seconds`; stop early once the reply is back at the source pod's veth, and
    fail as soon as a capture ends on its own (its hop would be blind for the rest of the wait)."""
    deadline = time.monotonic() + seconds
    parsed_size = -1
    while time.monotonic() < deadline:
        time.sleep(0.2)
        _check_running(captures)
        size = captures.sizes()[0]
        if size == parsed_size:
            continue  # nothing new at the source pod's veth since the last look
        parsed_size = size
        probe = HopResult(Hop("", None, "", ""))
        try:
            classify(probe, pcap.packets(captures.files[0]), src, dest.address, dest.port, None)
        except pcap.PcapFormatError:
            continue
        if probe.reply:
            captures.settle()
            return
    _check_running(captures)


def _check_running(captures: _Captures) -> None:
    if not all(d.running() for d in captures.dumps):
        raise CaptureError("a capture ended early: " +
                           "; ".join(d.error_text() for d in captures.dumps if not d.running()))
