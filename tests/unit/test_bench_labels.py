"""vnetctl bench: the table's labels follow the sizes that ran, and targets are only compared
for the sizes they are defined for (issue 13 #10, issue 14)."""

from __future__ import annotations

from vnetcni.bench.run import rows
from vnetcni.cli.bench_cmds import render_markdown

from support.bench_results import DEFAULT_SIZES, SCENARIOS, SMALL_SIZES, results, scen

def report(sizes: dict, res: dict | None = None) -> dict:
    res = res or results(sizes["big_burst"])
    return {"rows": rows(res, sizes), "kernel_floor_ms": 1.5, "sizes": sizes, "modes": ["bridge"]}


def by_key(rep: dict, section: str = "main") -> dict:
    return {r["key"]: r for r in rep["rows"] if r["section"] == section}


def test_small_run_is_labelled_with_its_sizes_and_has_no_foreign_targets():
    rep = report(SMALL_SIZES)
    main, fallback, pool_rows = by_key(rep), by_key(rep, "fallback"), by_key(rep, "pool")
    assert main["burst_add_wall_ms"]["label"] == "burst 5 ADD wall (ms)"
    assert main["big_burst_add_wall_ms"]["label"] == "burst 10 ADD wall (ms)"
    assert main["big_burst_del_teardown_ms"]["label"] == "burst 10 DEL wall, teardown done (ms)"
    assert main["seq_del_teardown_ms"]["label"] == "sequential DEL x5: teardown done (ms)"
    assert main["vnetd_rss_mib"]["label"] == "vnetd RSS with 10 endpoints (MiB)"
    assert fallback["concurrent_add_max_ms"]["label"] == "3 callers at once, x2 rounds: slowest ADD (ms)"
    assert pool_rows["pool_add_median_ms"]["label"].startswith("sequential ADD median, the last 4 pods")
    for key in ("burst_add_wall_ms", "big_burst_add_wall_ms", "burst_del_wall_ms", "big_burst_del_wall_ms"):
        assert main[key]["target"] is None and main[key]["verdict"] is None, key
    for key in ("concurrent_add_max_ms", "concurrent_del_max_ms"):
        assert fallback[key]["target"] is None and fallback[key]["verdict"] is None
    for key in ("pool_rss_mib", "pool_add_median_ms", "pool_del_median_ms"):
        assert pool_rows[key]["target"] is None and pool_rows[key]["verdict"] is None
    # per-call figures: their targets hold for any count
    assert main["seq_add_median_ms"]["target"] == 0.4 and fallback["fallback_seq_add_median_ms"]["target"] == 5.0
    table = render_markdown(rep)
    assert "burst 30" not in table and "110" not in table and "60 MiB" not in table and "1000 ms" not in table
    assert "a pool of 12 addresses against one of 6" in table and "| 6-address pool | 12-address pool | 12 / 6 |" in table


def test_default_sizes_compare_with_their_targets():
    rep = report(DEFAULT_SIZES)
    main, fallback, pool_rows = by_key(rep), by_key(rep, "fallback"), by_key(rep, "pool")
    assert main["burst_add_wall_ms"]["label"] == "burst 30 ADD wall (ms)"
    assert (main["burst_add_wall_ms"]["target"], main["big_burst_add_wall_ms"]["target"]) == (0.5, 0.4)
    assert main["burst_del_wall_ms"]["target"] == main["big_burst_del_wall_ms"]["target"] == 0.3
    assert main["burst_del_teardown_ms"]["target"] is None  # the targets judge what the runtime sees
    assert main["vnetd_rss_mib"]["target"] is None  # RSS is judged with the 250-address pool
    assert (pool_rows["pool_rss_mib"]["target"], pool_rows["pool_rss_mib"]["target_unit"]) == (60.0, "MiB")
    assert fallback["concurrent_del_max_ms"]["target_unit"] == "ms"
    table = render_markdown(rep)
    assert "| burst 110 ADD wall (ms) |" in table and "| <= 60 MiB | met |" in table
    assert "| <= 1000 ms | met |" in table and "| <= 1.2x | met |" in table
    assert "| kernel floor: one pod's netlink work, raw socket, warm (ms) |" in table


def test_both_modes_each_against_its_reference():
    sizes = dict(SMALL_SIZES)
    res = results(10)
    half = {k: dict(v, median_ms=2.5) if isinstance(v, dict) else v for k, v in res["vnetd"].items()}
    res.update({"reference-ptp": res["reference"], "vnetd-transparent": half})
    rep = dict(report(sizes, res), modes=["bridge", "transparent"])
    seq = by_key(rep)["seq_add_median_ms"]
    assert seq["ratio"] == 1.0 and seq["ratio_transparent"] == 0.5
    assert (seq["verdict"], seq["verdict_transparent"]) == ("not met", "not met")
    table = render_markdown(rep)
    assert "reference ptp+host-local" in table and "vnet transparent + vnetd" in table
    assert "verdict (bridge / transparent)" in table
    assert ("| sequential ADD median (ms) | 5.0 | 5.0 | 5.0 | 1.00x | 5.0 | 2.5 | 0.50x | <= 0.4x | not met / not met |"
            in table)


def test_sections_need_their_setups():
    """Transparent mode alone: no vnet without vnetd and no pool phase, so neither table."""
    res = {"reference-ptp": {k: scen(10) for k in SCENARIOS}, "vnetd-transparent": {k: scen(10) for k in SCENARIOS}}
    sizes = {"sequential": 5, "burst": 5, "big_burst": 10}
    rep = {"rows": rows(res, sizes), "kernel_floor_ms": 1.0, "sizes": sizes, "modes": ["transparent"]}
    assert {r["section"] for r in rep["rows"]} == {"main"}
    table = render_markdown(rep)
    assert "Without vnetd" not in table and "pool of" not in table
    assert "| vnet transparent + vnetd | transparent / ptp | target | verdict |" in table


def test_no_reference_shows_na_and_judges_no_ratio():
    res = results(10)
    del res["reference"]
    rep = dict(report(DEFAULT_SIZES, res), with_reference=False)
    main, fallback = by_key(rep), by_key(rep, "fallback")
    assert main["seq_add_median_ms"]["ratio"] is None and main["seq_add_median_ms"]["verdict"] is None
    assert fallback["concurrent_add_max_ms"]["verdict"] == "met"  # a limit in ms needs no reference
    table = render_markdown(rep)
    assert "| n/a |" in table and "| <= 0.4x | - |" in table
