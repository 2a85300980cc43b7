"""vnetd's teardown reaper (daemon/reaper.py) over the fake dataplane: a marked record's veth goes
first, then its address (with its cooldown), then the record; a busy attachment waits for the
next round; a record an ADD replaced meanwhile is left alone."""

from __future__ import annotations

import pytest

from vnetcni.daemon.reaper import Reaper
from vnetcni.dataplane.fake import FakeDataplane
from vnetcni.dataplane.model import PodLinkSpec
from vnetcni.ipam.model import Allocation, IpamState, NodePool
from vnetcni.ipam.store import IpamStore
from vnetcni.plugins.endpoints import EndpointRecord, EndpointStore, host_ifname
from vnetcni.state import attachments, locks

NOW = 1_800_000_000.0


@pytest.fixture
def node(tmp_path):
    sd = str(tmp_path / "state")

    def seed(state: IpamState) -> None:
        state.pool = NodePool("10.240.0.0/16", "10.240.0.1", "10.240.0.35", "00:0d:3a:51:c4:90",
                              tuple(f"10.240.0.{i}" for i in range(36, 46)))

    IpamStore(sd).apply(seed)
    dp = FakeDataplane()
    dp.ensure_bridge("azure0", 1500)
    return sd, dp, None


def attach(sd, dp, cid: str, ip: str, netns: str, **extra) -> EndpointRecord:
    rec = EndpointRecord("vntnet", cid, "eth0", host_ifname("vntnet", cid, "eth0"), "azure0",
                         ips=[ip], netns=netns, ipam="vnet-ipam", **extra)
    EndpointStore(sd).put(rec)
    IpamStore(sd).apply(lambda st: st.allocations.__setitem__(
        f"vntnet/{cid}/eth0", Allocation(ip, "10.240.0.1", "vntnet", cid, "eth0", NOW - 100)))
    dp.netns.add(netns)
    dp.create_pod_link(PodLinkSpec(netns=netns, ifname="eth0", host_ifname=rec.host_ifname, bridge="azure0",
                                   mtu=1500, addresses=(ip,), routes=()))
    return rec


def test_a_marked_record_loses_its_veth_then_its_address_then_the_record(node):
    sd, dp, _ = node
    kept = attach(sd, dp, "keep", "10.240.0.36/16", "/run/netns/a")
    gone = attach(sd, dp, "gone", "10.240.0.37/16", "/run/netns/b", cooldown_seconds=30)
    store = EndpointStore(sd)
    assert store.mark_tearing_down(gone.key, "2026-11-25T18:00:00+00:00").tearing_down
    assert store.mark_tearing_down(gone.key, "later").tearing_down == "2026-11-25T18:00:00+00:00"  # once
    assert store.mark_tearing_down("vntnet/none/eth0", "now") is None
    reaper = Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW)
    assert reaper.reap(sd) == 1
    assert gone.host_ifname not in dp.hosts and kept.host_ifname in dp.hosts
    state = IpamStore(sd).read()
    assert list(state.allocations) == ["vntnet/keep/eth0"]
    assert state.cooling["10.240.0.37"].reusable_after == NOW + 30
    assert list(store.all()) == [kept.key]
    assert reaper.reap(sd) == 0


def test_a_busy_attachment_waits_and_a_replaced_record_is_left_alone(node):
    sd, dp, _ = node
    rec = attach(sd, dp, "busy", "10.240.0.38/16", "/run/netns/c")
    store = EndpointStore(sd)
    store.mark_tearing_down(rec.key, "t0")
    reaper = Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW)
    path = attachments.lock_path(f"{sd}/locks", "vntnet", "busy", "eth0")
    fd = locks.acquire(path, timeout=1, transient=True)
    try:
        assert reaper.reap(sd) == 0  # an ADD or DEL of it is in flight
        assert rec.host_ifname in dp.hosts
        store.put(rec)  # what an ADD that took the teardown over leaves: an unmarked record
    finally:
        locks.release(path, fd, transient=True)
    assert reaper.reap(sd) == 0
    assert rec.host_ifname in dp.hosts and "vntnet/busy/eth0" in IpamStore(sd).read().allocations
