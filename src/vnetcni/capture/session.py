"""One capture from start to stop: on the pod's host interface (or inside the pod), bounded by a
packet count and/or a duration, stopped cleanly on Ctrl-C, with a count of what was written."""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from .engine import CaptureStats, Tcpdump
from .errors import CaptureError, PodNotFound
from .resolve import Pod


@dataclass(frozen=True)
class CaptureTarget:
    interface: str
    netns: str | None
    description: str


def capture_target(pod: Pod, in_pod: bool) -> CaptureTarget:
    """Where to run tcpdump: the host side on the pod's node, or the pod's own eth0."""
    if in_pod:
        netns = pod.host.pod_netns
        if not netns:
            raise PodNotFound(f"the network namespace of pod {pod.name} is not known",
                              "give the pod as its netns (/run/netns/NAME) to capture inside it")
        if not os.path.exists(netns):
            raise PodNotFound(f"pod {pod.name}'s network namespace {netns} no longer exists")
        return CaptureTarget(pod.host.pod_if, netns,
                             f"{pod.host.pod_if} inside pod {pod.name} (netns {netns})")
    where = "" if pod.node.netns is None else f" on node {pod.node.name}"
    return CaptureTarget(pod.host.host_if, pod.node.netns,
                         f"{pod.host.host_if}, host side of pod {pod.name}{where}")


@contextmanager
def _forwarding_signals(stop: Callable[[], None]) -> Iterator[list[int]]:
    """While capturing, SIGINT/SIGTERM/SIGHUP stop tcpdump cleanly instead of killing us."""
    received: list[int] = []

    def handler(signum, _frame):
        received.append(signum)
        stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_capture(target: CaptureTarget, out_fd: int, bpf_filter: str = "", count: int | None = None,
                duration: float | None = None, say: Callable[[str], None] = lambda _m: None
                ) -> CaptureStats:
    """Capture until `count` packets, `duration` seconds or a signal, whichever comes first."""
    tcpdump = Tcpdump(target.interface, out_fd, bpf_filter, count, target.netns)
    with _forwarding_signals(tcpdump.interrupt) as signals:
        tcpdump.start()
        try:
            tcpdump.wait_listening()
        except BaseException:
            tcpdump.kill()
            raise
        limits = [f"{count} packets" if count else "", f"{duration:g} s" if duration else ""]
        say(f"listening on {target.description}"
            + (f" (stops after {' or '.join(x for x in limits if x)}, or Ctrl-C)"
               if any(limits) else " (Ctrl-C stops)"))
        deadline = time.monotonic() + duration if duration else None
        while tcpdump.running():
            if deadline is not None and time.monotonic() >= deadline:
                tcpdump.interrupt()
                break
            time.sleep(0.05)
        stats = tcpdump.finish()
    stopped_by_us = bool(signals) or (deadline is not None)
    if stats.returncode == -signal.SIGPIPE:
        say("the reader of the capture went away (broken pipe)")
    elif stats.returncode not in (0, None) and not (stopped_by_us and stats.returncode == -signal.SIGINT):
        raise CaptureError(f"tcpdump on {tcpdump.where} failed: {tcpdump.error_text()}")
    return stats
