"""Running the whole benchmark and computing the table."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from typing import Callable

from . import scenarios as sc
from .targets import Target, prepared, reference_target, vnet_target

# Targets: ratio of vnet+vnetd to the reference (lower is better), each defined for one size of
# its scenario (None: any size). A run of other sizes still reports its figures, without a target.
TARGETS = {  # row key: (size key in report["sizes"], size the target is defined for, ratio)
    "seq_add_median_ms": ("sequential", None, 1.5),
    "seq_del_median_ms": ("sequential", None, 1.0),
    "burst_add_wall_ms": ("burst", 30, 1.0),
    "big_burst_add_wall_ms": ("big_burst", 110, 1.0),
}
RSS_TARGET_MIB = 80.0  # vnetd's RSS holding this many endpoints (Kubernetes' default max-pods)
RSS_TARGET_ENDPOINTS = 110


def _pods(prefix: str, n: int, create: bool) -> None:
    for i in range(n):
        if create:
            subprocess.run(["ip", "netns", "add", f"{prefix}p{i}"], check=True)
        else:
            subprocess.run(["ip", "netns", "del", f"{prefix}p{i}"], capture_output=True)


def measure_target(target: Target, seq: int, b30: int, b110: int, progress: Callable[[str], None]) -> dict:
    prefix = f"vbench{os.getpid()}{target.key}"
    n = max(seq, b30, b110)
    out: dict = {"label": target.label}
    with prepared(target, n + 1, target.key):
        _pods(prefix, n + 1, True)
        try:
            warm = range(n, n + 1)  # one untimed ADD/DEL: bridge set up, pool learned, caches warm
            sc.sequential(target, "ADD", warm, prefix)
            sc.sequential(target, "DEL", warm, prefix)
            progress(f"{target.label}: sequential ADD/DEL x{seq}")
            out["seq_add"] = sc.summary(sc.sequential(target, "ADD", range(seq), prefix))
            out["seq_del"] = sc.summary(sc.sequential(target, "DEL", range(seq), prefix))
            for size, name in ((b30, "burst"), (b110, "big_burst")):
                progress(f"{target.label}: burst of {size} ADDs, then DELs")
                wall, ops = sc.burst(target, "ADD", range(size), prefix)
                out[f"{name}_add"] = dict(sc.summary(ops), wall_ms=wall)
                if name == "big_burst":
                    rss = target.daemon_rss_kib()
                    out["rss_mib"] = rss / 1024 if rss else None
                wall, ops = sc.burst(target, "DEL", range(size), prefix)
                out[f"{name}_del"] = dict(sc.summary(ops), wall_ms=wall)
        finally:
            _pods(prefix, n + 1, False)
    return out


MODES = ("bridge", "transparent")
# (ours, reference) pairs whose ratio the table shows, per mode
PAIRS = {"bridge": ("vnetd", "reference"), "transparent": ("vnetd-transparent", "reference-ptp")}


def run_bench(seq: int = 50, b30: int = 30, b110: int = 110, progress: Callable[[str], None] = lambda s: None,
              with_reference: bool = True, modes: tuple[str, ...] = MODES) -> dict:
    from ..plugins.install import install

    started = time.time()
    bin_dir = tempfile.mkdtemp(prefix="vbench-bin-")
    installed = install(bin_dir)
    targets: list[Target] = []
    for mode in modes:
        # Each mode right after its reference (bridge: the reference bridge; transparent: ptp,
        # the reference routed veth). The in-process path (bridge mode only: starting Python
        # is the same cost in either mode) last: its bursts of 110 Python processes load the
        # machine for a while after they end.
        ref = reference_target(max(seq, b30, b110) + 1, mode) if with_reference else None
        if ref:
            targets.append(ref)
        targets.append(vnet_target(bin_dir, True, mode))
    if "bridge" in modes:
        targets.append(vnet_target(bin_dir, False))
    results = {}
    for t in targets:
        results[t.key] = measure_target(t, seq, b30, b110, progress)
    progress("kernel floor: one pod's netlink work from a warm process")
    floor = sc.kernel_floor()
    subprocess.run(["rm", "-rf", bin_dir])
    return {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
            "front_door": "compiled C client" if installed.compiled else "Python entry",
            "sizes": {"sequential": seq, "burst": b30, "big_burst": b110}, "modes": list(modes),
            "with_reference": with_reference,
            "results": results, "kernel_floor_ms": floor, "seconds": round(time.time() - started, 1),
            "rows": rows(results, {"sequential": seq, "burst": b30, "big_burst": b110})}


def _get(res: dict, path: str):
    part, _, field = path.partition(".")
    v = res.get(part)
    return v.get(field) if isinstance(v, dict) else v


ROWS = [  # (row key, label with {sizes}, path in a target's results)
    ("seq_add_median_ms", "sequential ADD median (ms)", "seq_add.median_ms"),
    ("seq_add_p95_ms", "sequential ADD p95 (ms)", "seq_add.p95_ms"),
    ("seq_del_median_ms", "sequential DEL median (ms)", "seq_del.median_ms"),
    ("seq_del_p95_ms", "sequential DEL p95 (ms)", "seq_del.p95_ms"),
    ("burst_add_wall_ms", "burst {burst} ADD wall (ms)", "burst_add.wall_ms"),
    ("burst_add_p50_ms", "burst {burst} ADD p50 (ms)", "burst_add.p50_ms"),
    ("burst_add_p99_ms", "burst {burst} ADD p99 (ms)", "burst_add.p99_ms"),
    ("burst_del_wall_ms", "burst {burst} DEL wall (ms)", "burst_del.wall_ms"),
    ("burst_del_p99_ms", "burst {burst} DEL p99 (ms)", "burst_del.p99_ms"),
    ("big_burst_add_wall_ms", "burst {big_burst} ADD wall (ms)", "big_burst_add.wall_ms"),
    ("big_burst_add_p99_ms", "burst {big_burst} ADD p99 (ms)", "big_burst_add.p99_ms"),
    ("big_burst_del_wall_ms", "burst {big_burst} DEL wall (ms)", "big_burst_del.wall_ms"),
    ("failed", "failed calls", None),
]


def target_for(key: str, sizes: dict) -> float | None:
    """The ratio target of a row, when one is defined for the size this run used."""
    if key not in TARGETS:
        return None
    size_key, defined_for, ratio = TARGETS[key]
    return ratio if defined_for is None or sizes.get(size_key) == defined_for else None


def rows(results: dict, sizes: dict) -> list[dict]:
    """The table: labels name the sizes that ran; targets only where defined for those sizes."""
    out = []
    for key, label, path in ROWS:
        row = {"key": key, "label": label.format(**sizes)}
        for t, res in results.items():
            if path is None:
                row[t] = sum(v.get("failed", 0) for v in res.values() if isinstance(v, dict))
            else:
                row[t] = _get(res, path)
        for mode, (ours_key, ref_key) in PAIRS.items():
            ref, ours = row.get(ref_key), row.get(ours_key)
            ratio = (ours / ref) if ref and ours is not None and path else None
            row["ratio" if mode == "bridge" else f"ratio_{mode}"] = ratio
        row["target"] = target_for(key, sizes)
        out.append(row)
    limit = RSS_TARGET_MIB if sizes.get("big_burst") == RSS_TARGET_ENDPOINTS else None
    rss = {k: results[k].get("rss_mib") for k in ("vnetd", "vnetd-transparent") if k in results}
    out.append({"key": "vnetd_rss_mib", "label": f"vnetd RSS with {sizes['big_burst']} endpoints (MiB)",
                **rss, "ratio": None, "target": None, "limit_mib": limit})
    return out
