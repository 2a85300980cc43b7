"""vnetd's background pool refresh: on schedule, with exponential backoff while the metadata fails,
allocation going on from the last good pool meanwhile."""

from __future__ import annotations

from vnetcni.daemon.refresher import MAX_BACKOFF_SECONDS, PoolRefresher
from vnetcni.ipam.config import IpamConfig
from vnetcni.ipam.metadata import MetadataError
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
