"""vnetctl bench: the table's labels follow the sizes that ran, and targets are only compared
for the sizes they are defined for (issue 13 #10)."""

from __future__ import annotations

from vnetcni.bench.run import rows
from vnetcni.cli.bench_cmds import render_markdown


def _results(n_big: int) -> dict:
    def scen(n):
        return {"n": n, "failed": 0, "median_ms": 5.0, "p50_ms": 5.0, "p95_ms": 6.0, "p99_ms": 7.0, "wall_ms": 50.0}
    per = {k: scen(n_big) for k in ("seq_add", "seq_del", "burst_add", "burst_del", "big_burst_add", "big_burst_del")}
    return {"reference": dict(per), "vnetd": dict(per, rss_mib=42.0), "inproc": dict(per)}


def _report(sizes: dict) -> dict:
    return {"rows": rows(_results(sizes["big_burst"]), sizes), "kernel_floor_ms": 1.5}


def test_small_run_is_labelled_with_its_sizes_and_has_no_foreign_targets():
    report = _report({"sequential": 5, "burst": 5, "big_burst": 10})
    labels = {r["key"]: r for r in report["rows"]}
    assert labels["burst_add_wall_ms"]["label"] == "burst 5 ADD wall (ms)"
    assert labels["big_burst_add_wall_ms"]["label"] == "burst 10 ADD wall (ms)"
    assert labels["vnetd_rss_mib"]["label"] == "vnetd RSS with 10 endpoints (MiB)"
    assert labels["burst_add_wall_ms"]["target"] is None and labels["big_burst_add_wall_ms"]["target"] is None
    assert labels["vnetd_rss_mib"]["limit_mib"] is None
    assert labels["seq_add_median_ms"]["target"] == 1.5  # per-call figure: holds for any count
    table = render_markdown(report)
    assert "burst 30" not in table and "110" not in table and "80 MiB" not in table


def test_default_sizes_compare_with_their_targets():
    report = _report({"sequential": 50, "burst": 30, "big_burst": 110})
    labels = {r["key"]: r for r in report["rows"]}
    assert labels["burst_add_wall_ms"]["label"] == "burst 30 ADD wall (ms)"
    assert labels["burst_add_wall_ms"]["target"] == 1.0 and labels["big_burst_add_wall_ms"]["target"] == 1.0
    table = render_markdown(report)
    assert "| burst 110 ADD wall (ms) |" in table and "<= 80 MiB" in table


def test_both_modes_each_against_its_reference():
    sizes = {"sequential": 5, "burst": 5, "big_burst": 10}
    results = _results(10)
    half = {k: dict(v, median_ms=2.5) if isinstance(v, dict) else v for k, v in results["vnetd"].items()}
    results.update({"reference-ptp": results["reference"], "vnetd-transparent": half})
    report = {"rows": rows(results, sizes), "kernel_floor_ms": 1.5, "modes": ["bridge", "transparent"]}
    seq = next(r for r in report["rows"] if r["key"] == "seq_add_median_ms")
    assert seq["ratio"] == 1.0 and seq["ratio_transparent"] == 0.5
    table = render_markdown(report)
    assert "reference ptp+host-local" in table and "vnet transparent + vnetd" in table
    assert "| sequential ADD median (ms) | 5.0 | 5.0 | 5.0 | 1.00x | 5.0 | 2.5 | 0.50x | <= 1.5x |" in table
