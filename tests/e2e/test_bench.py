"""`vnetctl bench` runs, measures every target, and reports its table (no timing is asserted:
benchmarks are not tests; the figures are never compared with their targets here)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from support.resources import netns_names

VNETCTL = str(Path(sys.executable).with_name("vnetctl"))
SMALL = ["--pods", "3", "--burst", "3", "--big-burst", "4", "--callers", "3", "--rounds", "2",
         "--pool", "8", "--small-pool", "4", "--pool-calls", "2"]
DEL_PHASES = ("warm_del", "seq_del", "burst_del", "big_burst_del")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) and v >= 0


def test_bench_small_run_reports_every_scenario_and_leaves_nothing():
    proc = subprocess.Popen([VNETCTL, "bench", *SMALL, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    # every throwaway namespace of this run removed (they are named after its pid)
    assert not [n for n in netns_names() if re.match(rf"vbench{proc.pid}\D", n)]
    report = json.loads(stdout)
    assert report["failed_calls"] == 0 and report["machine"]["load_before"] >= 0
    results = report["results"]
    assert set(results) == {"reference", "vnetd", "inproc", "reference-ptp", "vnetd-transparent",
                            "pool-small", "pool-large"}
    for key in ("reference", "vnetd", "inproc", "reference-ptp", "vnetd-transparent"):
        res = results[key]
        for scenario in ("seq_add", "burst_add", "big_burst_add", *DEL_PHASES):
            assert res[scenario]["failed"] == 0, (key, scenario, res[scenario]["first_error"])
        assert res["seq_add"]["n"] == 3 and res["big_burst_add"]["n"] == 4
        for phase in DEL_PHASES:  # both phases measured; the teardown never before the answer
            assert _number(res[phase]["answered_ms"]) and _number(res[phase]["teardown_ms"]), (key, phase)
            assert res[phase]["teardown_ms"] >= res[phase]["answered_ms"], (key, phase)
            if key.startswith("reference"):  # a synchronous DEL: torn down when answered
                assert res[phase]["teardown_ms"] == res[phase]["answered_ms"], (key, phase)
    for key in ("reference", "inproc"):  # 3 callers at once: on a fresh node, then 2 rounds
        assert results[key]["concurrent_add"]["n"] == 6 and results[key]["concurrent_del"]["n"] == 6
        assert results[key]["fresh_add"]["n"] == 3 and results[key]["fresh_del"]["n"] == 3
        for scenario in ("fresh_add", "fresh_del", "concurrent_add", "concurrent_del"):
            assert results[key][scenario]["failed"] == 0, (key, scenario, results[key][scenario]["first_error"])
    for key, size in (("pool-small", 4), ("pool-large", 8)):
        res = results[key]
        assert res["addresses"] == size and res["add"]["n"] == 2 and res["del"]["n"] == 2
        assert res["fill"]["n"] == size - 2 and res["empty"]["n"] == size - 2
        for part in ("fill", "add", "del", "empty"):
            assert res[part]["failed"] == 0, (key, part, res[part]["first_error"])
        assert _number(res["rss_mib"]) and res["rss_mib"] > 0

    rows = {(r["section"], r["key"]): r for r in report["rows"]}
    for key in ("seq_add_median_ms", "seq_del_median_ms", "seq_del_teardown_ms", "burst_del_wall_ms",
                "burst_del_teardown_ms", "big_burst_del_teardown_ms", "vnetd_rss_mib"):
        row = rows[("main", key)]
        assert _number(row["vnetd"]) and _number(row["vnetd-transparent"]), key
        assert "target" in row and "verdict" in row and "verdict_transparent" in row
    assert rows[("main", "seq_add_median_ms")]["ratio"] > 0 and rows[("main", "seq_add_median_ms")]["ratio_transparent"] > 0
    assert rows[("main", "seq_add_median_ms")]["target"] == 0.4  # per call: any count
    assert rows[("main", "burst_del_wall_ms")]["target"] is None  # defined for 30 pods, not 3
    for key in ("fallback_seq_add_median_ms", "fresh_add_max_ms", "concurrent_add_max_ms", "concurrent_del_max_ms"):
        row = rows[("fallback", key)]
        assert _number(row["reference"]) and _number(row["inproc"]) and row["ratio"] > 0, key
    for key in ("pool_add_median_ms", "pool_del_median_ms", "pool_add_cpu_ms", "pool_del_cpu_ms", "pool_rss_mib",
                "pool_empty_teardown_ms"):
        row = rows[("pool", key)]
        assert _number(row["pool-small"]) and _number(row["pool-large"]), key
        # filling and emptying cover different numbers of pods per pool: no ratio
        assert (row["ratio"] is None) if key == "pool_empty_teardown_ms" else (row["ratio"] > 0), key
        assert row["target"] is None and row["verdict"] is None  # defined for 250 against 30
    assert report["targets"]["judged"] >= 3  # the per-call ones, whatever the sizes
    assert report["kernel_floor_ms"] > 0


def test_bench_table_is_printed():
    proc = subprocess.run([VNETCTL, "bench", "--pods", "2", "--burst", "2", "--big-burst", "2", "--callers", "2",
                           "--rounds", "1", "--pool", "3", "--small-pool", "2", "--pool-calls", "1", "--no-reference"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| sequential ADD median (ms) |" in out and "vnetd RSS" in out
    assert "| burst 2 DEL wall, answered (ms) |" in out and "| burst 2 DEL wall, teardown done (ms) |" in out
    assert "vnet transparent + vnetd" in out and "| n/a |" in out
    assert "Without vnetd" in out and "| 2 callers at once, x1 rounds: slowest ADD (ms) |" in out
    assert "with a pool of 3 addresses against one of 2" in out and "| vnetd RSS with the pool full (MiB) |" in out
    assert "targets met: none judged" in out and "kernel floor" in out


def test_bench_refuses_a_pool_phase_that_does_not_fit():
    proc = subprocess.run([VNETCTL, "bench", "--pool", "10", "--small-pool", "20"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--small-pool" in proc.stderr and "Traceback" not in proc.stderr
