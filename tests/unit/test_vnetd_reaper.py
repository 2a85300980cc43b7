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


# --- when rounds start (no timing is asserted: each wait ends on what must happen, or fails after
# a generous deadline; the constants are set so that only the behaviour under test can end it) ---
import threading  # noqa: E402
import time  # noqa: E402

from vnetcni.daemon import reaper as reaper_mod  # noqa: E402


def until(what, cond, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def marked(sd, dp, n: int, first: int = 40) -> list[EndpointRecord]:
    recs = [attach(sd, dp, f"m{i}", f"10.240.0.{first + i}/16", f"/run/netns/m{i}") for i in range(n)]
    for rec in recs:
        EndpointStore(sd).mark_tearing_down(rec.key, "t0")
    return recs


def test_a_round_waits_while_dels_keep_arriving_but_no_longer_than_its_bound(node, monkeypatch):
    sd, dp, _ = node
    monkeypatch.setattr(reaper_mod, "PERIOD_SECONDS", 3600.0)
    monkeypatch.setattr(reaper_mod, "QUIET_SECONDS", 3600.0)  # DELs never stop arriving, as far as it knows
    monkeypatch.setattr(reaper_mod, "MAX_WAIT_SECONDS", 0.05)  # the bound is what must end the wait
    recs = marked(sd, dp, 3)
    reaper = Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW)
    reaper.start()
    try:
        stop = threading.Event()
        feeder = threading.Thread(target=lambda: [reaper.queue(sd) for _ in iter(lambda: stop.wait(0.002), True)])
        feeder.start()
        try:
            until("the bounded round", lambda: reaper.reaped == 3)
        finally:
            stop.set()
            feeder.join()
    finally:
        reaper.stop()
    assert not any(r.host_ifname in dp.hosts for r in recs)
    assert IpamStore(sd).read().allocations == {} and EndpointStore(sd).all() == {}


def test_a_round_starts_once_dels_stop_arriving(node, monkeypatch):
    sd, dp, _ = node
    monkeypatch.setattr(reaper_mod, "PERIOD_SECONDS", 3600.0)
    monkeypatch.setattr(reaper_mod, "QUIET_SECONDS", 0.02)
    monkeypatch.setattr(reaper_mod, "MAX_WAIT_SECONDS", 3600.0)  # only the quiet can end the wait
    reaper = Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW)
    reaper.start()
    try:
        marked(sd, dp, 2)
        reaper.queue(sd)
        until("the round after the quiet", lambda: reaper.reaped == 2)
    finally:
        reaper.stop()


def test_a_full_pool_does_not_wait_for_the_waiting_round(node, monkeypatch):
    """An ADD that finds the pool full runs a round itself (vnet.py calls reap()): the loop's wait
    for quiet does not hold it up."""
    sd, dp, _ = node
    monkeypatch.setattr(reaper_mod, "PERIOD_SECONDS", 3600.0)
    monkeypatch.setattr(reaper_mod, "QUIET_SECONDS", 3600.0)
    monkeypatch.setattr(reaper_mod, "MAX_WAIT_SECONDS", 3600.0)
    reaper = Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW)
    reaper.start()
    try:
        recs = marked(sd, dp, 2)
        reaper.queue(sd)  # the loop now waits (an hour) for DELs to stop arriving
        assert reaper.reap(sd) == 2
        assert not any(r.host_ifname in dp.hosts for r in recs)
    finally:
        reaper.stop()


def test_an_attachment_busy_at_its_round_is_tried_again_without_another_del(node, monkeypatch):
    """The DEL that woke the round may still hold its attachment's lock (it is released once the
    answer is sent): the reaper tries again soon by itself, not at the next DEL or period."""
    sd, dp, _ = node
    monkeypatch.setattr(reaper_mod, "PERIOD_SECONDS", 3600.0)
    monkeypatch.setattr(reaper_mod, "QUIET_SECONDS", 0.0)
    rec = marked(sd, dp, 1)[0]
    path = attachments.lock_path(f"{sd}/locks", "vntnet", rec.container_id, "eth0")
    fd = locks.acquire(path, timeout=1, transient=True)
    reaper = Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW)
    reaper.start()
    try:
        reaper.queue(sd)
        until("a round that found it busy", lambda: reaper._busy)
        assert rec.host_ifname in dp.hosts and reaper.reaped == 0
        locks.release(path, fd, transient=True)
        fd = None
        until("the retry", lambda: reaper.reaped == 1)
        assert rec.host_ifname not in dp.hosts and EndpointStore(sd).all() == {}
    finally:
        if fd is not None:
            locks.release(path, fd, transient=True)
        reaper.stop()


def test_stopping_while_a_round_waits_finishes_what_is_marked(node, monkeypatch):
    sd, dp, _ = node
    monkeypatch.setattr(reaper_mod, "QUIET_SECONDS", 3600.0)
    monkeypatch.setattr(reaper_mod, "MAX_WAIT_SECONDS", 3600.0)
    reaper = Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW)
    reaper.start()
    recs = marked(sd, dp, 3)
    reaper.queue(sd)
    reaper.stop()
    assert reaper.reaped == 3 and not any(r.host_ifname in dp.hosts for r in recs)
    assert IpamStore(sd).read().allocations == {} and EndpointStore(sd).all() == {}


def test_marks_a_killed_vnetd_left_are_finished_by_the_next_one(node):
    """Between the mark and the round nothing but the file holds the teardown: a new reaper (the
    next vnetd, before it serves) finds and finishes every marked record, and nothing else."""
    sd, dp, _ = node
    kept = attach(sd, dp, "kept", "10.240.0.36/16", "/run/netns/k")
    recs = marked(sd, dp, 4)
    first = Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW)
    first.queue(sd)  # killed here: its thread never ran
    assert Reaper(sd, dataplane_factory=lambda _lock_dir: dp, clock=lambda: NOW).reap_all() == 4
    assert not any(r.host_ifname in dp.hosts for r in recs) and kept.host_ifname in dp.hosts
    assert list(IpamStore(sd).read().allocations) == [kept.key] and list(EndpointStore(sd).all()) == [kept.key]
