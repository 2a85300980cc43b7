"""`vnetctl bench` runs, measures every target, and reports its table (no timing is asserted:
benchmarks are not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.resources import netns_names

VNETCTL = str(Path(sys.executable).with_name("vnetctl"))


def test_bench_small_run_reports_every_scenario_and_leaves_nothing():
    def bench_netns() -> set[str]:  # the bench's own (other sessions make theirs meanwhile)
        return {n for n in netns_names() if n.startswith("vbench")}

    before = bench_netns()
    proc = subprocess.run([VNETCTL, "bench", "--pods", "3", "--burst", "3", "--big-burst", "4", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["results"]) == {"reference", "vnetd", "inproc", "reference-ptp", "vnetd-transparent"}
    for key, res in report["results"].items():
        for scenario in ("seq_add", "seq_del", "burst_add", "burst_del", "big_burst_add", "big_burst_del"):
            assert res[scenario]["failed"] == 0, (key, scenario, res[scenario]["first_error"])
        assert res["seq_add"]["n"] == 3 and res["big_burst_add"]["n"] == 4
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["seq_add_median_ms"]["ratio"] > 0 and rows["vnetd_rss_mib"]["vnetd"] > 0
    assert rows["seq_add_median_ms"]["ratio_transparent"] > 0 and rows["vnetd_rss_mib"]["vnetd-transparent"] > 0
    assert report["kernel_floor_ms"] > 0
    assert bench_netns() <= before  # every throwaway namespace removed (another run's may go meanwhile)


def test_bench_table_is_printed():
    proc = subprocess.run([VNETCTL, "bench", "--pods", "2", "--burst", "2", "--big-burst", "2", "--no-reference"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| sequential ADD median (ms) |" in proc.stdout and "vnetd RSS" in proc.stdout
    assert "vnet transparent + vnetd" in proc.stdout and "| n/a |" in proc.stdout
