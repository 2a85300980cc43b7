"""Made-up `vnetctl bench` results in the shape bench/run.py produces, for the unit tests of
the table, its targets and verdicts (tests/unit/test_bench_labels.py, test_bench_targets.py)."""

from __future__ import annotations

SCENARIOS = ("seq_add", "seq_del", "burst_add", "burst_del", "big_burst_add", "big_burst_del",
             "concurrent_add", "concurrent_del", "fresh_add", "fresh_del")
DEFAULT_SIZES = {"sequential": 50, "burst": 30, "big_burst": 110, "callers": 8, "rounds": 3,
                 "pool": 250, "small_pool": 30, "pool_calls": 25}
SMALL_SIZES = {"sequential": 5, "burst": 5, "big_burst": 10, "callers": 3, "rounds": 2,
               "pool": 12, "small_pool": 6, "pool_calls": 4}


def scen(n: int, ms: float = 5.0) -> dict:
    return {"n": n, "failed": 0, "median_ms": ms, "p50_ms": ms, "p95_ms": ms + 1, "p99_ms": ms + 2,
            "max_ms": ms + 3, "wall_ms": 10 * ms, "answered_ms": 10 * ms, "teardown_ms": 12 * ms}


def pool(n: int, ms: float, rss: float) -> dict:
    return {"addresses": n, "add": dict(scen(25, ms), daemon_cpu_ms=ms / 2), "del": dict(scen(25, ms), daemon_cpu_ms=ms / 3),
            "fill": scen(n - 25, ms),
            "empty": scen(n - 25, ms), "rss_mib": rss, "peak_rss_mib": rss + 1}


def results(n_big: int) -> dict:
    per = {k: scen(n_big) for k in SCENARIOS}
    return {"reference": dict(per), "vnetd": dict(per, rss_mib=42.0), "inproc": dict(per),
            "pool-small": pool(30, 5.0, 40.0), "pool-large": pool(250, 5.5, 50.0)}
