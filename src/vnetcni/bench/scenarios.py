"""The scenarios: sequential ADD/DEL, bursts launched at once, as a runtime would exec plugins.

Every call is a real process (the plugin executable) started from a thread that is inside the
target's node namespace, with its stdin and CNI_* environment; its latency is wall time from
launch to exit. Pod namespaces are created before and removed after, untimed.
"""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
from dataclasses import dataclass

from ..dataplane.netns import entered
from .targets import Target


@dataclass
class Op:
    started: float
    ended: float
    ok: bool
    error: str = ""

    @property
    def ms(self) -> float:
        return (self.ended - self.started) * 1000


def call(target: Target, command: str, container_id: str, netns: str) -> Op:
    """One plugin call; the calling thread must already be inside the node namespace."""
    started = time.perf_counter()
    proc = subprocess.run([target.binary], input=target.stdin, env=target.env(command, container_id, netns),
                          capture_output=True)
    ended = time.perf_counter()
    return Op(started, ended, proc.returncode == 0, proc.stdout.decode(errors="replace")[:300]
              if proc.returncode else "")


def pod_netns(i: int, prefix: str) -> str:
    return f"/run/netns/{prefix}p{i}"


def sequential(target: Target, command: str, pods: range, prefix: str) -> list[Op]:
    ops = []
    with entered(f"/run/netns/{target.node}"):
        for i in pods:
            ops.append(call(target, command, f"{prefix}c{i}", pod_netns(i, prefix)))
    return ops


def burst(target: Target, command: str, pods: range, prefix: str) -> tuple[float, list[Op]]:
    """All calls launched at once; returns (wall ms, ops)."""
    ops: list[Op | None] = [None] * len(pods)
    gate = threading.Barrier(len(pods) + 1)

    def worker(slot: int, i: int) -> None:
        with entered(f"/run/netns/{target.node}"):
            gate.wait()
            ops[slot] = call(target, command, f"{prefix}c{i}", pod_netns(i, prefix))

    threads = [threading.Thread(target=worker, args=(slot, i)) for slot, i in enumerate(pods)]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join()
    done = [op for op in ops if op is not None]
    wall = (max(o.ended for o in done) - min(o.started for o in done)) * 1000
    return wall, done


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(ops: list[Op]) -> dict:
    ms = [o.ms for o in ops]
    return {"n": len(ops), "failed": sum(not o.ok for o in ops),
            "median_ms": statistics.median(ms) if ms else float("nan"),
            "p50_ms": percentile(ms, 0.50), "p95_ms": percentile(ms, 0.95), "p99_ms": percentile(ms, 0.99),
            "first_error": next((o.error for o in ops if not o.ok), "")}


def kernel_floor(samples: int = 20) -> float:
    """Median ms of the kernel's own netlink work for one pod, from a warm process with the
    cheapest transport we have (a plain netlink socket): veth created with its peer in the pod
    namespace on a bridge, address, route, link up."""
    import os

    from pyroute2 import IPRoute

    from ..dataplane.rtnl import RtnlChannel

    node, pod = f"vbench{os.getpid()}floor", f"vbench{os.getpid()}floorpod"
    for ns in (node, pod):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    times = []
    try:
        with entered(f"/run/netns/{node}"):
            ipr = IPRoute()
        ipr.link("add", ifname="br0", kind="bridge")
        br = ipr.link("get", ifname="br0")[0]["index"]
        ipr.link("set", index=br, state="up")
        ipr.close()
        host = RtnlChannel(f"/run/netns/{node}")
        inside = RtnlChannel(f"/run/netns/{pod}")
        fd = os.open(f"/run/netns/{pod}", os.O_RDONLY)
        for i in range(samples):
            t = time.perf_counter()
            host.add_veth(f"v{i}", f"e{i}", fd, 1500, f"02:00:00:00:01:{i:02x}", f"02:00:00:00:02:{i:02x}", br)
            idx = inside.link_index(f"e{i}")
            inside.add_address(idx, f"10.9.{i}.2/24")
            inside.set_up(idx)
            inside.add_route(idx, f"10.{10 + i}.0.0/16", f"10.9.{i}.1")
            times.append((time.perf_counter() - t) * 1000)
        os.close(fd)
        host.close()
        inside.close()
    finally:
        for ns in (node, pod):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return statistics.median(times)
