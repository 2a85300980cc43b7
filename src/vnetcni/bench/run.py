"""Running the whole benchmark: every plugin setup through its scenarios, then the table."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import tempfile
import time
from typing import Callable

from ..daemon.afteranswer import MAX_WAIT_SECONDS
from . import scenarios as sc
from .report import failed_calls, rows, verdict_summary
from .targets import Target, prepared, reference_target, vnet_target

FILL_BURST = 110  # the pool phase fills and empties its pool in bursts of at most this many calls
CONCURRENT_SETUPS = ("reference", "inproc")  # measured with several callers at once


def _pods(prefix: str, n: int, create: bool) -> None:
    """The pods' namespaces, made or removed with one `ip -batch` (not one process each)."""
    verb = "add" if create else "del"
    script = "".join(f"netns {verb} {prefix}p{i}\n" for i in range(n))
    subprocess.run(["ip", *([] if create else ["-force"]), "-batch", "-"], input=script.encode(),
                   check=create, capture_output=True)


def _del_phase(target: Target, ops: list[sc.Op], cids: list[str]) -> dict:
    """A DEL scenario's figures: per call (answered), its wall, all answered, and when the
    teardown was done; waits for the teardown (so it never leaks into the next figure)."""
    out = sc.summary(ops)
    since, answered = min(o.started for o in ops), max(o.ended for o in ops)
    out["wall_ms"] = out["answered_ms"] = sc.wall_ms(ops)
    teardown, left = sc.torn_down(target, cids, since, answered)
    out["teardown_ms"] = teardown
    if teardown is None:  # the plugin never finished it: counted as a failed call
        out["failed"] += 1
        out["first_error"] = out["first_error"] or f"teardown not done after {sc.TEARDOWN_TIMEOUT:.0f} s: {left}"
    return out


def _cids(pods: range, prefix: str, tag: str = "") -> list[str]:
    return [sc.container_id(i, prefix, tag) for i in pods]


def _concurrent(target: Target, callers: int, rounds: int, prefix: str, name: str = "r") -> tuple[dict, dict]:
    """`rounds` times: `callers` ADDs launched at once, then their DELs at once (each round
    waits for its teardown). `name` tells the container IDs of these rounds apart."""
    adds, dels, stuck = [], [], []
    for r in range(rounds):
        tag = f"{name}{r}"
        adds += sc.burst(target, "ADD", range(callers), prefix, tag)[1]
        ops = sc.burst(target, "DEL", range(callers), prefix, tag)[1]
        dels += ops
        phase = _del_phase(target, ops, _cids(range(callers), prefix, tag))
        if phase["teardown_ms"] is None:
            stuck.append(phase["first_error"])
    add, rm = sc.summary(adds), sc.summary(dels)
    rm["failed"] += len(stuck)
    rm["first_error"] = rm["first_error"] or next(iter(stuck), "")
    return add, rm


def measure_target(target: Target, sizes: dict, progress: Callable[[str], None]) -> dict:
    seq, b30, b110 = sizes["sequential"], sizes["burst"], sizes["big_burst"]
    callers = sizes.get("callers", 0) if target.key in CONCURRENT_SETUPS else 0
    prefix = f"vbench{os.getpid()}{target.key}"
    n = max(seq, b30, b110, callers)
    out: dict = {"label": target.label}
    with prepared(target, n + 1, target.key):
        try:
            _pods(prefix, n + 1, True)
            if callers:  # the node's first pods, all at once: the bridge is not set up yet
                progress(f"{target.label}: {callers} ADDs at once on a fresh node, then their DELs")
                out["fresh_add"], out["fresh_del"] = _concurrent(target, callers, 1, prefix, "f")
            warm = range(n, n + 1)  # one untimed ADD/DEL: bridge set up, pool learned, caches warm
            sc.sequential(target, "ADD", warm, prefix)
            out["warm_del"] = _del_phase(target, sc.sequential(target, "DEL", warm, prefix), _cids(warm, prefix))
            progress(f"{target.label}: sequential ADD/DEL x{seq}")
            out["seq_add"] = sc.summary(sc.sequential(target, "ADD", range(seq), prefix))
            out["seq_del"] = _del_phase(target, sc.sequential(target, "DEL", range(seq), prefix),
                                        _cids(range(seq), prefix))
            if callers:
                progress(f"{target.label}: {callers} ADDs at once then their DELs, x{sizes['rounds']}")
                out["concurrent_add"], out["concurrent_del"] = _concurrent(target, callers, sizes["rounds"], prefix)
            for size, name in ((b30, "burst"), (b110, "big_burst")):
                progress(f"{target.label}: burst of {size} ADDs, then DELs")
                wall, ops = sc.burst(target, "ADD", range(size), prefix)
                out[f"{name}_add"] = dict(sc.summary(ops), wall_ms=wall)
                if name == "big_burst":
                    rss = target.daemon_rss_kib()
                    out["rss_mib"] = rss / 1024 if rss else None
                _wall, ops = sc.burst(target, "DEL", range(size), prefix)
                out[f"{name}_del"] = _del_phase(target, ops, _cids(range(size), prefix))
        finally:
            _pods(prefix, n + 1, False)
    return out


def _bursts(target: Target, command: str, pods: range, prefix: str) -> list[sc.Op]:
    ops: list[sc.Op] = []
    for start in range(pods.start, pods.stop, FILL_BURST):
        ops += sc.burst(target, command, range(start, min(start + FILL_BURST, pods.stop)), prefix)[1]
    return ops


def measure_pools(pools: list[tuple[Target, int]], calls: int, progress: Callable[[str], None]) -> list[dict]:
    """vnetd with pools of different sizes, each on its own node (its metadata lists exactly that
    many addresses), measured together: each pool filled in bursts but for its last `calls`
    pods; then those pods added one at a time, one call to each pool in turn (so load from
    elsewhere falls on both alike: the per-call cost with the pool nearly full); vnetd's RSS
    with each pool full; the same pods deleted the same way; then the rest in bursts. Every
    DEL phase waits for its teardown."""
    outs = [{"label": t.label, "addresses": n} for t, n in pools]
    prefixes = [f"vbench{os.getpid()}{t.key}" for t, _ in pools]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        for (t, n), prefix in zip(pools, prefixes):
            stack.enter_context(prepared(t, n, t.key))
            stack.callback(_pods, prefix, n + 1, False)
            _pods(prefix, n + 1, True)
        lasts = [range(n - calls, n) for _, n in pools]
        for (t, n), prefix, out in zip(pools, prefixes, outs):
            warm = range(n, n + 1)
            sc.sequential(t, "ADD", warm, prefix)
            out["warm_del"] = _del_phase(t, sc.sequential(t, "DEL", warm, prefix), _cids(warm, prefix))
            progress(f"{t.label}: {n - calls} pods in bursts")
            ops = _bursts(t, "ADD", range(n - calls), prefix)
            out["fill"] = dict(sc.summary(ops), wall_ms=sc.wall_ms(ops)) if ops else None
        progress(f"{' and '.join(f'{n}' for _, n in pools)}-address pools: {calls} pods each, one call at a time, "
                 "the pools in turn")
        cpu = [t.daemon_cpu_ms() for t, _ in pools]
        adds = _in_turn(pools, "ADD", lasts, prefixes)
        # vnetd sends a pod's gratuitous ARP after its answer, within MAX_WAIT_SECONDS (daemon/
        # afteranswer.py): waited for, so that its CPU counts in the ADDs'.
        time.sleep(MAX_WAIT_SECONDS + 0.1)
        for (t, _), out, ops, before in zip(pools, outs, adds, cpu):
            out["add"] = dict(sc.summary(ops), daemon_cpu_ms=_per_call(t.daemon_cpu_ms(), before, ops))
            rss, peak = t.daemon_rss_kib(), t.daemon_rss_kib("VmHWM")
            out["rss_mib"], out["peak_rss_mib"] = (rss / 1024 if rss else None), (peak / 1024 if peak else None)
        cpu = [t.daemon_cpu_ms() for t, _ in pools]
        dels = _in_turn(pools, "DEL", lasts, prefixes)
        for (t, n), prefix, out, ops, last, before in zip(pools, prefixes, outs, dels, lasts, cpu):
            out["del"] = _del_phase(t, ops, _cids(last, prefix))  # waits for the reaper: its CPU counts
            out["del"]["daemon_cpu_ms"] = _per_call(t.daemon_cpu_ms(), before, ops)
        for (t, n), prefix, out in zip(pools, prefixes, outs):
            ops = _bursts(t, "DEL", range(n - calls), prefix)
            out["empty"] = _del_phase(t, ops, _cids(range(n - calls), prefix)) if ops else None
    for out in outs:
        out["seconds_all_pools"] = round(time.monotonic() - started, 1)
    return outs


def _per_call(after: float | None, before: float | None, ops: list) -> float | None:
    """vnetd's CPU ms per call over a phase (less sensitive to the machine's other load than
    the calls' wall time)."""
    return (after - before) / len(ops) if after is not None and before is not None and ops else None


def _in_turn(pools: list[tuple[Target, int]], command: str, pods: list[range], prefixes: list[str]) -> list[list[sc.Op]]:
    """One call to each setup in turn (which goes first alternates), until each has had its
    pods; the ops of each setup."""
    ops: list[list[sc.Op]] = [[] for _ in pools]
    order = list(range(len(pools)))
    for j in range(max(len(r) for r in pods)):
        for k in (order if j % 2 == 0 else order[::-1]):
            (t, _), r = pools[k], pods[k]
            if j < len(r):
                ops[k] += sc.sequential(t, command, range(r[j], r[j] + 1), prefixes[k])
    return ops


def _timed(measure, *args) -> dict:
    """A setup's results with the seconds it took, set-up and clean-up included."""
    started = time.monotonic()
    out = measure(*args)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


MODES = ("bridge", "transparent")


def run_bench(seq: int = 50, b30: int = 30, b110: int = 110, progress: Callable[[str], None] = lambda s: None,
              with_reference: bool = True, modes: tuple[str, ...] = MODES, callers: int = 8, rounds: int = 3,
              pool: int = 250, small_pool: int = 30, pool_calls: int = 25) -> dict:
    """Every setup through its scenarios. callers=0 skips the concurrent callers, pool=0 the
    pool phase (both bridge mode only, like vnet without vnetd)."""
    from ..plugins.install import install

    started, load_before = time.time(), os.getloadavg()[0]
    bridge = "bridge" in modes
    sizes = {"sequential": seq, "burst": b30, "big_burst": b110}
    if bridge and callers:
        sizes.update(callers=callers, rounds=rounds)
    if bridge and pool:
        sizes.update(pool=pool, small_pool=small_pool, pool_calls=pool_calls)
    bin_dir = tempfile.mkdtemp(prefix="vbench-bin-")
    installed = install(bin_dir)
    results = {}
    try:
        for mode in modes:  # each mode right after its reference (bridge: bridge; transparent: ptp)
            ref = reference_target(max(seq, b30, b110, callers) + 1, mode) if with_reference else None
            for t in ([ref] if ref else []) + [vnet_target(bin_dir, True, mode)]:
                results[t.key] = _timed(measure_target, t, sizes, progress)
        if "pool" in sizes:
            pools = [(vnet_target(bin_dir, True, key=key, label=f"vnet + vnet-ipam, vnetd, {n}-address pool"), n)
                     for key, n in (("pool-small", small_pool), ("pool-large", pool))]
            for (t, _), out in zip(pools, measure_pools(pools, pool_calls, progress)):
                results[t.key] = out
        if bridge:  # last: its bursts of Python processes load the machine for a while after they end
            t = vnet_target(bin_dir, False)
            results[t.key] = _timed(measure_target, t, sizes, progress)
        progress("kernel floor: one pod's netlink work from a warm process")
        floor = sc.kernel_floor()
    finally:
        subprocess.run(["rm", "-rf", bin_dir])
    table = rows(results, sizes)
    machine = {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
               # the 1-minute load average when the run started and ended (its own load included):
               # figures from a machine others load are noisy
               "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    return {"machine": machine,
            "front_door": "compiled C client" if installed.compiled else "Python entry",
            "sizes": sizes, "modes": list(modes), "with_reference": with_reference,
            "results": results, "kernel_floor_ms": floor, "seconds": round(time.time() - started, 1),
            "rows": table, "targets": verdict_summary(table),
            "failed_calls": sum(failed_calls(r) for r in results.values())}
