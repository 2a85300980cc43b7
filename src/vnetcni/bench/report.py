"""The benchmark's tables: rows from the measured results, each with its target and verdict.

Pure functions of the results (no I/O, no root): tests/unit/test_bench_labels.py and
test_bench_targets.py cover them.

Three sections, each a table with its own columns:
- main: every plugin setup side by side (reference, vnet without vnetd, vnet + vnetd, and the
  transparent mode against ptp); ratios are vnet + vnetd / its reference in the same run.
- fallback: vnet without vnetd against the reference bridge (ratio: no vnetd / reference), and
  the slowest call with several callers at once.
- pool: vnetd holding a large address pool against a small one (ratio: large / small).

A target is defined for the sizes it names (TARGETS); a run of other sizes still reports its
figures, without a target or a verdict, and its labels name the sizes that ran.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Goal(NamedTuple):
    limit: float  # met when the judged figure is <= limit
    unit: str  # "x" (a ratio), "ms" or "MiB"
    judged: str  # "ratio" (the section's ratios) or the column whose figure is judged
    defined_for: dict  # {size key: size} the target is defined for; empty: any size


# Issue 14's targets. Lower is better everywhere.
TARGETS: dict[str, Goal] = {
    # vnet + vnetd / reference, same run
    "seq_add_median_ms": Goal(0.4, "x", "ratio", {}),  # per call: holds for any count
    "seq_del_median_ms": Goal(0.3, "x", "ratio", {}),
    "burst_add_wall_ms": Goal(0.5, "x", "ratio", {"burst": 30}),
    "burst_del_wall_ms": Goal(0.3, "x", "ratio", {"burst": 30}),
    "big_burst_add_wall_ms": Goal(0.4, "x", "ratio", {"big_burst": 110}),
    "big_burst_del_wall_ms": Goal(0.3, "x", "ratio", {"big_burst": 110}),
    # without vnetd: no vnetd / reference; no call over a second with 8 callers at once
    "fallback_seq_add_median_ms": Goal(5.0, "x", "ratio", {}),
    "fresh_add_max_ms": Goal(1000.0, "ms", "inproc", {"callers": 8}),  # no call: a node's first pods too
    "concurrent_add_max_ms": Goal(1000.0, "ms", "inproc", {"callers": 8}),
    "concurrent_del_max_ms": Goal(1000.0, "ms", "inproc", {"callers": 8}),
    # vnetd with a 250-address pool: memory, and per-call cost against a 30-address pool
    "pool_rss_mib": Goal(60.0, "MiB", "pool-large", {"pool": 250}),
    "pool_add_median_ms": Goal(1.2, "x", "ratio", {"pool": 250, "small_pool": 30}),
    "pool_del_median_ms": Goal(1.2, "x", "ratio", {"pool": 250, "small_pool": 30}),
}

MET, NOT_MET = "met", "not met"

# (row key, label with {sizes}, path in a setup's results: "scenario.field", or a field)
MAIN_ROWS = [
    ("seq_add_median_ms", "sequential ADD median (ms)", "seq_add.median_ms"),
    ("seq_add_p95_ms", "sequential ADD p95 (ms)", "seq_add.p95_ms"),
    ("seq_del_median_ms", "sequential DEL median, answered (ms)", "seq_del.median_ms"),
    ("seq_del_p95_ms", "sequential DEL p95, answered (ms)", "seq_del.p95_ms"),
    ("seq_del_answered_ms", "sequential DEL x{sequential}: all answered (ms)", "seq_del.answered_ms"),
    ("seq_del_teardown_ms", "sequential DEL x{sequential}: teardown done (ms)", "seq_del.teardown_ms"),
    ("burst_add_wall_ms", "burst {burst} ADD wall (ms)", "burst_add.wall_ms"),
    ("burst_add_p50_ms", "burst {burst} ADD p50 (ms)", "burst_add.p50_ms"),
    ("burst_add_p99_ms", "burst {burst} ADD p99 (ms)", "burst_add.p99_ms"),
    ("burst_del_wall_ms", "burst {burst} DEL wall, answered (ms)", "burst_del.wall_ms"),
    ("burst_del_teardown_ms", "burst {burst} DEL wall, teardown done (ms)", "burst_del.teardown_ms"),
    ("burst_del_p99_ms", "burst {burst} DEL p99, answered (ms)", "burst_del.p99_ms"),
    ("big_burst_add_wall_ms", "burst {big_burst} ADD wall (ms)", "big_burst_add.wall_ms"),
    ("big_burst_add_p99_ms", "burst {big_burst} ADD p99 (ms)", "big_burst_add.p99_ms"),
    ("big_burst_del_wall_ms", "burst {big_burst} DEL wall, answered (ms)", "big_burst_del.wall_ms"),
    ("big_burst_del_teardown_ms", "burst {big_burst} DEL wall, teardown done (ms)", "big_burst_del.teardown_ms"),
    ("failed", "failed calls", None),
    ("vnetd_rss_mib", "vnetd RSS with {big_burst} endpoints (MiB)", "rss_mib"),
]
FALLBACK_ROWS = [
    ("fallback_seq_add_median_ms", "sequential ADD median (ms)", "seq_add.median_ms"),
    ("fallback_seq_del_median_ms", "sequential DEL median (ms)", "seq_del.median_ms"),
    ("fresh_add_max_ms", "{callers} callers at once on a fresh node (bridge not set up yet): slowest ADD (ms)",
     "fresh_add.max_ms"),
    ("concurrent_add_max_ms", "{callers} callers at once, x{rounds} rounds: slowest ADD (ms)", "concurrent_add.max_ms"),
    ("concurrent_del_max_ms", "{callers} callers at once, x{rounds} rounds: slowest DEL (ms)", "concurrent_del.max_ms"),
]
POOL_ROWS = [
    ("pool_add_median_ms", "sequential ADD median, the last {pool_calls} pods filling the pool (ms)", "add.median_ms"),
    ("pool_del_median_ms", "sequential DEL median, {pool_calls} pods out of the full pool (ms)", "del.median_ms"),
    ("pool_add_cpu_ms", "vnetd CPU per ADD, the same pods (ms)", "add.daemon_cpu_ms"),
    ("pool_del_cpu_ms", "vnetd CPU per DEL, the same pods, their teardown included (ms)", "del.daemon_cpu_ms"),
    ("pool_rss_mib", "vnetd RSS with the pool full (MiB)", "rss_mib"),
    ("pool_peak_rss_mib", "vnetd peak RSS, VmHWM (MiB)", "peak_rss_mib"),
    ("pool_fill_wall_ms", "filling the rest of the pool: bursts of ADDs, wall (ms)", "fill.wall_ms"),
    ("pool_empty_wall_ms", "emptying the pool: bursts of DELs, all answered (ms)", "empty.wall_ms"),
    ("pool_empty_teardown_ms", "emptying the pool: bursts of DELs, teardown done (ms)", "empty.teardown_ms"),
    ("pool_failed", "failed calls", None),
]

# section: (its rows, the setups whose figures it shows, {ratio key: (ours, theirs)})
SECTIONS = {
    "main": (MAIN_ROWS, ("reference", "inproc", "vnetd", "reference-ptp", "vnetd-transparent"),
             {"ratio": ("vnetd", "reference"), "ratio_transparent": ("vnetd-transparent", "reference-ptp")}),
    "fallback": (FALLBACK_ROWS, ("reference", "inproc"), {"ratio": ("inproc", "reference")}),
    "pool": (POOL_ROWS, ("pool-small", "pool-large"), {"ratio": ("pool-large", "pool-small")}),
}
# Rows whose figures cover different numbers of pods per setup (the pools filled and emptied:
# 5 pods against 225): shown side by side, never as a ratio.
NOT_COMPARABLE = {"pool_fill_wall_ms", "pool_empty_wall_ms", "pool_empty_teardown_ms"}
# which setup a section needs to be shown at all
SECTION_NEEDS = {"main": None, "fallback": "inproc", "pool": "pool-large"}


def goal_for(key: str, sizes: dict) -> Goal | None:
    """The target of a row, when one is defined for the sizes this run used."""
    goal = TARGETS.get(key)
    if goal is None or any(sizes.get(k) != v for k, v in goal.defined_for.items()):
        return None
    return goal


def target_for(key: str, sizes: dict) -> float | None:
    goal = goal_for(key, sizes)
    return goal.limit if goal else None


def verdict(value, limit: float | None) -> str | None:
    """"met" / "not met", or None when there is no target or no figure to judge."""
    if limit is None or not _number(value):
        return None
    return MET if value <= limit else NOT_MET


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _get(res: dict, path: str):
    part, _, field = path.partition(".")
    v = res.get(part)
    if not field:
        return v
    return v.get(field) if isinstance(v, dict) else None


def failed_calls(res: dict) -> int:
    return sum(v.get("failed", 0) for v in res.values() if isinstance(v, dict))


def rows(results: dict, sizes: dict) -> list[dict]:
    """Every section's rows: labels name the sizes that ran; targets and verdicts only where a
    target is defined for those sizes. A row's figures are keyed by setup (results' keys)."""
    labels = _label_sizes(sizes)
    out = []
    for section, (spec, setups, pairs) in SECTIONS.items():
        needs = SECTION_NEEDS[section]
        if needs is not None and needs not in results:
            continue
        for key, label, path in spec:
            row: dict = {"key": key, "label": label.format(**labels), "section": section}
            for t in setups:
                if t in results:
                    row[t] = failed_calls(results[t]) if path is None else _get(results[t], path)
            for ratio_key, (ours, theirs) in pairs.items():
                a, b = row.get(ours), row.get(theirs)
                comparable = path and key not in NOT_COMPARABLE
                row[ratio_key] = a / b if comparable and _number(a) and _number(b) and b else None
            goal = goal_for(key, sizes)
            row["target"] = goal.limit if goal else None
            row["target_unit"] = goal.unit if goal else None
            for ratio_key in pairs:  # "verdict" (and "verdict_transparent" beside its ratio)
                judged = row[ratio_key] if goal and goal.judged == "ratio" else None
                row[ratio_key.replace("ratio", "verdict")] = verdict(judged, goal.limit if goal else None)
            if goal is not None and goal.judged != "ratio":
                row["verdict"] = verdict(row.get(goal.judged), goal.limit)
            out.append(row)
    return out


def _label_sizes(sizes: dict) -> dict:
    """Every size a label may name ("-" for one this run did not set)."""
    keys = ("sequential", "burst", "big_burst", "callers", "rounds", "pool", "small_pool", "pool_calls")
    return {k: sizes.get(k, "-") for k in keys}


SECTION_NAMES = {"main": "", "fallback": "without vnetd: ", "pool": "pool: "}


def verdict_summary(table: list[dict]) -> dict:
    """How many targets were judged and met, and which were not met (section, label, mode)."""
    judged, missed = 0, []
    for r in table:
        for k, v in r.items():
            if k.startswith("verdict") and v is not None:
                judged += 1
                if v == NOT_MET:
                    mode = k.partition("_")[2]
                    missed.append(SECTION_NAMES.get(r.get("section", "main"), "") + r["label"]
                                  + (f" ({mode})" if mode else ""))
    return {"judged": judged, "met": judged - len(missed), "not_met": missed}
