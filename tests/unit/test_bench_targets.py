"""vnetctl bench's targets and verdicts (issue 14): which figure each target judges, in which
direction, for which sizes; pure functions of made-up results (nothing is timed here)."""

from __future__ import annotations

import math

import pytest

from vnetcni.bench import run
from vnetcni.bench import scenarios as sc
from vnetcni.bench.report import TARGETS, goal_for, rows, verdict, verdict_summary

from support.bench_results import DEFAULT_SIZES, pool, results, scen


def _row(table: list[dict], key: str) -> dict:
    return next(r for r in table if r["key"] == key)


def test_issue_14_targets():
    want = {"seq_add_median_ms": (0.4, "x"), "seq_del_median_ms": (0.3, "x"), "burst_add_wall_ms": (0.5, "x"),
            "big_burst_add_wall_ms": (0.4, "x"), "burst_del_wall_ms": (0.3, "x"), "big_burst_del_wall_ms": (0.3, "x"),
            "fallback_seq_add_median_ms": (5.0, "x"), "fresh_add_max_ms": (1000.0, "ms"),
            "concurrent_add_max_ms": (1000.0, "ms"),
            "concurrent_del_max_ms": (1000.0, "ms"), "pool_rss_mib": (60.0, "MiB"),
            "pool_add_median_ms": (1.2, "x"), "pool_del_median_ms": (1.2, "x")}
    assert {k: (g.limit, g.unit) for k, g in TARGETS.items()} == want
    table = rows(results(110), DEFAULT_SIZES)
    assert {r["key"] for r in table if r["target"] is not None} == set(want)  # every one is in a row


@pytest.mark.parametrize("value, limit, expected", [
    (0.39, 0.4, "met"), (0.4, 0.4, "met"), (0.41, 0.4, "not met"), (None, 0.4, None), (math.nan, 0.4, None),
    (True, 0.4, None), (0.1, None, None), (999.0, 1000.0, "met"), (1000.5, 1000.0, "not met"),
])
def test_verdict_is_lower_or_equal(value, limit, expected):
    assert verdict(value, limit) == expected


def test_targets_apply_only_to_the_sizes_they_are_defined_for():
    assert goal_for("burst_add_wall_ms", {"burst": 30}).limit == 0.5
    assert goal_for("burst_add_wall_ms", {"burst": 31}) is None
    assert goal_for("seq_add_median_ms", {"sequential": 7}).limit == 0.4
    assert goal_for("concurrent_add_max_ms", {"callers": 4}) is None
    assert goal_for("pool_rss_mib", {"pool": 250, "small_pool": 10}).limit == 60.0
    assert goal_for("pool_add_median_ms", {"pool": 250, "small_pool": 10}) is None  # against 30 only
    assert goal_for("pool_add_median_ms", {"pool": 250, "small_pool": 30}).limit == 1.2
    assert goal_for("pool_add_median_ms", {}) is None and goal_for("failed", DEFAULT_SIZES) is None


def test_main_ratios_are_vnetd_over_the_reference():
    res = results(110)
    res["reference"]["seq_add"] = scen(50, 10.0)
    res["vnetd"]["seq_add"] = scen(50, 3.9)  # 0.39x: met
    res["vnetd"]["seq_del"] = scen(50, 5.0)  # reference 5.0: 1.0x, not met
    res["inproc"]["seq_add"] = scen(50, 100.0)  # no vnetd does not enter the main ratio
    table = rows(res, DEFAULT_SIZES)
    seq_add = _row(table, "seq_add_median_ms")
    assert seq_add["ratio"] == pytest.approx(0.39) and seq_add["verdict"] == "met"
    assert _row(table, "seq_del_median_ms")["verdict"] == "not met"
    # the big burst DEL wall judges what the runtime saw (answered), not the teardown
    res["vnetd"]["big_burst_del"] = dict(scen(110), wall_ms=14.0, teardown_ms=500.0)  # reference 50 ms: 0.28x
    table = rows(res, DEFAULT_SIZES)
    assert _row(table, "big_burst_del_wall_ms")["verdict"] == "met"
    assert _row(table, "big_burst_del_teardown_ms")["ratio"] == pytest.approx(500.0 / 60.0)
    assert _row(table, "big_burst_del_teardown_ms")["verdict"] is None


def test_fallback_ratio_is_no_vnetd_over_the_reference_and_the_slowest_call_is_judged_in_ms():
    res = results(110)
    res["reference"]["seq_add"] = scen(50, 10.0)
    res["inproc"]["seq_add"] = scen(50, 51.0)  # 5.1x
    res["inproc"]["concurrent_add"] = dict(scen(24), max_ms=999.0)
    res["inproc"]["concurrent_del"] = dict(scen(24), max_ms=1001.0)
    res["inproc"]["fresh_add"] = dict(scen(8), max_ms=1500.0)  # the node's first pods: judged too
    res["reference"]["concurrent_add"] = dict(scen(24), max_ms=5000.0)  # the reference's is only shown
    table = rows(res, DEFAULT_SIZES)
    fb = _row(table, "fallback_seq_add_median_ms")
    assert fb["section"] == "fallback" and fb["ratio"] == pytest.approx(5.1) and fb["verdict"] == "not met"
    assert _row(table, "concurrent_add_max_ms")["verdict"] == "met"
    assert _row(table, "concurrent_add_max_ms")["reference"] == 5000.0
    assert _row(table, "concurrent_del_max_ms")["verdict"] == "not met"
    assert _row(table, "fresh_add_max_ms")["verdict"] == "not met"


def test_pool_ratio_is_large_over_small_and_rss_is_the_large_pools():
    res = results(110)
    res["pool-small"] = pool(30, 5.0, 70.0)  # the small pool's RSS is only shown
    res["pool-large"] = pool(250, 5.95, 60.0)  # 1.19x, 60 MiB: both met
    table = rows(res, DEFAULT_SIZES)
    add, rss = _row(table, "pool_add_median_ms"), _row(table, "pool_rss_mib")
    assert add["ratio"] == pytest.approx(1.19) and add["verdict"] == "met"
    assert rss["pool-large"] == 60.0 and rss["verdict"] == "met"
    cpu = _row(table, "pool_add_cpu_ms")  # vnetd's CPU per call: shown beside the wall time, not judged
    assert cpu["ratio"] == pytest.approx(1.19) and cpu["target"] is None
    res["pool-large"] = pool(250, 6.1, 60.5)
    table = rows(res, DEFAULT_SIZES)
    assert _row(table, "pool_add_median_ms")["verdict"] == "not met"
    assert _row(table, "pool_rss_mib")["verdict"] == "not met"
    summary = verdict_summary(table)
    assert "pool: vnetd RSS with the pool full (MiB)" in summary["not_met"]
    assert summary["met"] + len(summary["not_met"]) == summary["judged"]


def test_failed_rows_count_every_scenario_of_each_setup():
    res = results(110)
    res["vnetd"]["big_burst_del"] = dict(scen(110), failed=1)
    res["vnetd"]["warm_del"] = dict(scen(1), failed=1)
    res["pool-large"]["empty"] = dict(scen(225), failed=2)
    table = rows(res, DEFAULT_SIZES)
    assert _row(table, "failed")["vnetd"] == 2 and _row(table, "failed")["reference"] == 0
    assert _row(table, "pool_failed")["pool-large"] == 2 and _row(table, "pool_failed")["ratio"] is None


def _ops(*spans):
    return [sc.Op(a, b, True) for a, b in spans]


def test_a_del_phase_reports_answered_and_teardown_and_waits(monkeypatch):
    seen = {}

    def torn_down(target, cids, since, answered):
        seen.update(cids=cids, since=since, answered=answered)
        return 80.0, ""

    monkeypatch.setattr(sc, "torn_down", torn_down)
    phase = run._del_phase(object(), _ops((1.0, 1.010), (1.002, 1.030)), ["a", "b"])
    assert seen == {"cids": ["a", "b"], "since": 1.0, "answered": 1.030}
    assert phase["wall_ms"] == phase["answered_ms"] == pytest.approx(30.0)
    assert phase["teardown_ms"] == 80.0 and phase["failed"] == 0 and phase["max_ms"] == pytest.approx(28.0)


def test_a_teardown_never_done_counts_as_a_failure(monkeypatch):
    monkeypatch.setattr(sc, "torn_down", lambda *a: (None, "2 veths still in the node namespace (azv1, azv2)"))
    phase = run._del_phase(object(), _ops((1.0, 1.010)), ["a"])
    assert phase["teardown_ms"] is None and phase["failed"] == 1
    assert "teardown not done" in phase["first_error"] and "azv1" in phase["first_error"]


class _FakeState:
    """A plugin whose state and veths go away after a number of looks."""

    def __init__(self, state_looks: int, veth_looks: int) -> None:
        self.state_looks, self.veth_looks, self.reads = state_looks, veth_looks, 0
        self.node = "x"

    def host_veths(self, cids):
        return set(cids)

    def state_token(self):
        return (self.state_looks,)

    def state_left(self, cids):
        self.reads += 1
        if self.state_looks > 0:
            self.state_looks -= 1
            return "1 endpoint records (1 marked tearing down)"
        return ""


class _FakeRtnl:
    def __init__(self, target):
        self.target = target

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _observe(monkeypatch, target, timeout=5.0):
    import vnetcni.dataplane.rtnl as rtnl

    monkeypatch.setattr(rtnl, "RtnlChannel", lambda path: _FakeRtnl(target))

    def veths_left(ch, names):
        if ch.target.veth_looks > 0:
            ch.target.veth_looks -= 1
            return "1 veths still in the node namespace (a)"
        return ""

    monkeypatch.setattr(sc, "veths_left", veths_left)
    now = sc.time.perf_counter()
    return sc.torn_down(target, ["a"], now - 0.010, now - 0.005, timeout=timeout)


def test_a_synchronous_del_is_torn_down_when_answered(monkeypatch):
    ms, left = _observe(monkeypatch, _FakeState(0, 0))
    assert left == "" and ms == pytest.approx(5.0)


def test_teardown_waits_for_the_state_then_the_veths(monkeypatch):
    target = _FakeState(2, 2)
    ms, left = _observe(monkeypatch, target)
    assert left == "" and ms > 5.0 and target.state_looks == 0 and target.veth_looks == 0
    assert target.reads == 3  # read again only when the state changed


def test_teardown_never_done_reports_what_is_left(monkeypatch):
    target = _FakeState(10**9, 0)
    target.state_token = lambda: (0,)  # unchanged: read again only every _REREAD seconds
    ms, left = _observe(monkeypatch, target, timeout=0.3)
    assert ms is None and "marked tearing down" in left
    assert 2 <= target.reads <= 5


def test_filling_and_emptying_the_pools_are_shown_without_a_ratio():
    """The pools are filled and emptied with different numbers of pods (5 against 225): their
    walls sit side by side, but a ratio of them would mean nothing."""
    res = results(110)
    res["pool-small"] = pool(30, 5.0, 20.0)
    res["pool-large"] = pool(250, 5.5, 25.0)
    table = rows(res, DEFAULT_SIZES)
    for key in ("pool_fill_wall_ms", "pool_empty_wall_ms", "pool_empty_teardown_ms"):
        row = _row(table, key)
        assert row["pool-small"] is not None and row["pool-large"] is not None and row["ratio"] is None
    assert _row(table, "pool_add_median_ms")["ratio"] is not None
