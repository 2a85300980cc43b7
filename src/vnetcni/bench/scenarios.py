"""The scenarios: sequential ADD/DEL, bursts launched at once, as a runtime would exec plugins.

Every call is a real process (the plugin executable) started from a thread that is inside the
target's node namespace, with its stdin and CNI_* environment; its latency is wall time from
launch to exit. Pod namespaces are created before and removed after, untimed.

A DEL has two phases: answered (what the runtime sees: the call's exit) and teardown done (the
pod's veth is gone from the node namespace and its address released in the plugin's state).
vnetd answers a DEL before the veth is gone (its reaper deletes it afterwards); the reference and
vnet without vnetd answer after. torn_down() observes the second phase from outside, reading
only, and every DEL phase waits for it, so a reaper's work never leaks into the next figure.
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


def container_id(i: int, prefix: str, tag: str = "") -> str:
    return f"{prefix}{tag}c{i}"


def sequential(target: Target, command: str, pods: range, prefix: str, tag: str = "") -> list[Op]:
    ops = []
    with entered(f"/run/netns/{target.node}"):
        for i in pods:
            ops.append(call(target, command, container_id(i, prefix, tag), pod_netns(i, prefix)))
    return ops


def burst(target: Target, command: str, pods: range, prefix: str, tag: str = "") -> tuple[float, list[Op]]:
    """All calls launched at once; returns (wall ms, ops)."""
    ops: list[Op | None] = [None] * len(pods)
    gate = threading.Barrier(len(pods) + 1)

    def worker(slot: int, i: int) -> None:
        with entered(f"/run/netns/{target.node}"):
            gate.wait()
            ops[slot] = call(target, command, container_id(i, prefix, tag), pod_netns(i, prefix))

    threads = [threading.Thread(target=worker, args=(slot, i)) for slot, i in enumerate(pods)]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join()
    done = [op for op in ops if op is not None]
    return wall_ms(done), done


def wall_ms(ops: list[Op]) -> float:
    """From the first call's launch to the last call's exit."""
    return (max(o.ended for o in ops) - min(o.started for o in ops)) * 1000 if ops else float("nan")


TEARDOWN_TIMEOUT = 30.0  # seconds; vnetd's reaper runs a round at least every 5 s
_POLL = 0.002  # seconds between two looks (a state read only when the state was written,
_REREAD = 0.1  # or this long after the last read)


def torn_down(target: Target, container_ids: list[str], since: float, answered: float,
              timeout: float = TEARDOWN_TIMEOUT) -> tuple[float | None, str]:
    """Wait until these pods' DEL is really done: their veths gone from the node namespace and
    their addresses released in the plugin's state. `since` and `answered` are perf_counter
    times: the first call's launch and the last call's exit. Returns (ms from `since` to the
    look that found it done, ""), or (None, what was still left after `timeout`). When the
    first look, right after the last answer, finds it done (a synchronous DEL), teardown done
    is the answer's time. Reads only: a link dump in the node namespace and the state files,
    without their locks; the state is read again only when it was written (Target.state_token),
    so looking every 2 ms costs next to nothing."""
    from ..dataplane.rtnl import RtnlChannel

    names = target.host_veths(container_ids)
    token, read_at, left = None, 0.0, "nothing looked at yet"
    state_done, first = False, True
    until = time.perf_counter() + timeout
    with RtnlChannel(f"/run/netns/{target.node}") as rtnl:
        while True:
            now = answered if first else time.perf_counter()
            first = False
            current = target.state_token()
            if current != token or (not state_done and now - read_at > _REREAD):
                token, read_at = current, now
                try:
                    left = target.state_left(container_ids)
                except Exception as exc:  # noqa: BLE001 - mid-change or unreadable: look again
                    left = f"state unreadable: {getattr(exc, 'msg', exc)}"
                state_done = not left
            if state_done:
                left = veths_left(rtnl, names)
                if not left:
                    return (now - since) * 1000, ""
            if now > until:
                return None, left
            time.sleep(_POLL)


def veths_left(rtnl, names: set[str] | None) -> str:
    """The node-side veths still there: those named, or any veth when names is None."""
    from ..dataplane import nlmsg as nl

    links = [nl.Link(body) for _typ, body in rtnl.request_raw(
        nl.RTM_GETLINK, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, nl.IFINFO.pack(0, 0, 0, 0, 0))]
    left = sorted(link.name for link in links if link.kind == "veth" and (names is None or link.name in names))
    return f"{len(left)} veths still in the node namespace ({', '.join(left[:3])})" if left else ""


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
            "max_ms": max(ms) if ms else float("nan"),
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
