"""vnetd's background pool refresh: on schedule, with exponential backoff while the metadata fails,
allocation going on from the last good pool meanwhile."""

from __future__ import annotations

import os

from vnetcni.daemon.refresher import MAX_BACKOFF_SECONDS, PoolRefresher
from vnetcni.ipam.config import IpamConfig
from vnetcni.ipam.metadata import MetadataError
from vnetcni.ipam.model import Allocation
from vnetcni.ipam.sources import FakeMetadataSource
from vnetcni.ipam.store import IpamStore

XML = (b'<Interfaces><Interface MacAddress="000D3A51C490" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">'
       b'<IPAddress Address="10.240.0.35" IsPrimary="true"/><IPAddress Address="10.240.0.36" IsPrimary="false"/>'
       b'</IPSubnet></Interface></Interfaces>')


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_refreshes_on_schedule_and_backs_off_while_failing(tmp_path):
    source = FakeMetadataSource(XML)
    clock = Clock()
    refresher = PoolRefresher(clock=clock, source_factory=lambda cfg: source)
    cfg = IpamConfig.from_sections({"type": "vnet-ipam", "stateDir": str(tmp_path), "refreshSeconds": 10})
    refresher.observe(cfg)
    refresher.observe(cfg)  # the same pool seen twice is tracked once
    assert len(refresher.tracked()) == 1

    refresher.refresh_due()
    assert source.calls == 1 and IpamStore(str(tmp_path)).read().pool is not None
    clock.now += 5
    refresher.refresh_due()
    assert source.calls == 1  # not due yet
    clock.now += 5
    refresher.refresh_due()
    assert source.calls == 2

    source.answer = MetadataError("metadata service down")
    waits = []
    for _ in range(8):
        t = refresher.tracked()[0]
        clock.now = max(clock.now, t.next_at)
        before = clock.now
        refresher.refresh_due()
        waits.append(refresher.tracked()[0].next_at - before)
    assert waits[:4] == [20, 40, 80, 160] and max(waits) == MAX_BACKOFF_SECONDS
    assert refresher.tracked()[0].total_failures == 8
    assert IpamStore(str(tmp_path)).read().pool is not None  # the last good pool is kept

    source.answer = XML
    clock.now = refresher.tracked()[0].next_at
    refresher.refresh_due()
    t = refresher.tracked()[0]
    assert t.failures == 0 and t.next_at == clock.now + 10


def test_backoff_never_overflows_however_many_failures(tmp_path):
    source = FakeMetadataSource(MetadataError("metadata service down"))
    clock = Clock()
    refresher = PoolRefresher(clock=clock, source_factory=lambda cfg: source)
    refresher.observe(IpamConfig.from_sections({"type": "vnet-ipam", "stateDir": str(tmp_path), "refreshSeconds": 10}))
    t = refresher.tracked()[0]
    t.failures = 1024  # 10 * 2**1025 is past a float: the old code raised OverflowError here
    refresher.refresh_due()
    assert t.failures == 1025 and t.next_at == clock.now + MAX_BACKOFF_SECONDS
    clock.now = t.next_at
    refresher.refresh_due()  # and it keeps trying
    assert source.calls == 2


def test_pools_are_learned_from_the_state_at_start(tmp_path):
    """After a restart: refresh, quarantine and pool metrics before any ADD names the pool."""
    from vnetcni.daemon.metrics import Metrics
    from vnetcni.ipam.refresh import refresh_pool

    sd = str(tmp_path / "state")
    md = tmp_path / "interfaces.xml"
    md.write_bytes(XML)
    clock = Clock()
    cfg = {"type": "vnet-ipam", "stateDir": sd, "metadataFile": str(md), "refreshSeconds": 7,
           "reuseCooldownSeconds": 5}
    refresh_pool(cfg, clock=clock)  # what a previous vnetd (or an in-process ADD) did
    IpamStore(sd).apply(lambda st: st.allocations.__setitem__(
        "n/c/eth0", Allocation("10.240.0.36/16", "10.240.0.1", "n", "c", "eth0", 1.0)))

    refresher = PoolRefresher(clock=clock)  # a fresh vnetd
    assert refresher.learn_from_state([sd, str(tmp_path / "nothing-here")]) == [sd]
    [t] = refresher.tracked()
    assert (t.cfg.state_dir, t.cfg.metadata_file, t.cfg.refresh_seconds, t.cfg.cooldown_seconds) == (sd, str(md), 7, 5)
    text = _scrape(Metrics(refresher))
    assert 'vnetd_pool_addresses{state_dir="%s"} 1.0' % sd in text
    md.write_bytes(XML.replace(b'<IPAddress Address="10.240.0.36" IsPrimary="false"/>', b""))
    clock.now += 8
    refresher.refresh_due()  # the address the pod holds is gone from the metadata: quarantined
    state = IpamStore(sd).read()
    assert state.quarantined() and state.quarantined()[0].address == "10.240.0.36/16"


def test_a_corrupt_state_skips_that_pool_only(tmp_path):
    good, bad = str(tmp_path / "good"), str(tmp_path / "bad")
    source = FakeMetadataSource(XML)
    refresher = PoolRefresher(clock=Clock(), source_factory=lambda cfg: source)
    for sd in (bad, good):
        refresher.observe(IpamConfig.from_sections({"type": "vnet-ipam", "stateDir": sd}))
    os.makedirs(bad)
    with open(os.path.join(bad, "ipam.json"), "wb") as f:
        f.write(b"\x00")
    refresher.refresh_due()
    assert IpamStore(good).read().pool is not None
    assert {t.cfg.state_dir: t.failures for t in refresher.tracked()} == {bad: 1, good: 0}


def _scrape(metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_a_metrics_scrape_never_moves_a_corrupt_state_aside(tmp_path):
    """Reads have no side effects: scraping (or `vnetctl status`) leaves the evidence in place."""
    from vnetcni.daemon.metrics import Metrics

    sd = str(tmp_path)
    refresher = PoolRefresher(clock=Clock(), source_factory=lambda cfg: FakeMetadataSource(XML))
    refresher.observe(IpamConfig.from_sections({"type": "vnet-ipam", "stateDir": sd}))
    refresher.refresh_due()
    path = os.path.join(sd, "ipam.json")
    with open(path, "wb") as f:
        f.write(b"\x00corrupt")
    metrics = Metrics(refresher, [sd])
    for _ in range(3):
        _scrape(metrics)
    assert open(path, "rb").read() == b"\x00corrupt"
    assert not [n for n in os.listdir(sd) if ".corrupt-" in n]
