"""One attachment, one operation at a time (state/attachments.py) and what a call does when its
caller is gone (cni/deadline.py): with the fake dataplane, no root."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from vnetcni.cni import deadline, dispatch
from vnetcni.dataplane.fake import FakeDataplane
from vnetcni.ipam.plugin import IpamPlugin
from vnetcni.ipam.sources import FakeMetadataSource
from vnetcni.ipam.metadata import render_node
from vnetcni.ipam.store import IpamStore
from vnetcni.plugins.endpoints import EndpointStore, host_ifname
from vnetcni.plugins.vnet import VnetPlugin
from vnetcni.state import attachments, locks

XML = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 46)])


@pytest.fixture
def node(tmp_path):
    dp = FakeDataplane()
    ipam = IpamPlugin(source_factory=lambda cfg: FakeMetadataSource(XML))
    plugin = VnetPlugin(dataplane_factory=lambda _sd: dp, ipam=ipam)
    sd = str(tmp_path)
    for i in range(8):
        dp.netns.add(f"/run/netns/p{i}")
    return dp, plugin, ipam, sd


def conf(sd: str) -> dict:
    return {"cniVersion": "1.1.0", "name": "vnet", "type": "vnet", "stateDir": sd, "bridge": "azure0",
            "ipam": {"type": "vnet-ipam", "stateDir": sd, "reuseCooldownSeconds": 0}}


def call(plugin, verb, sd, cid="c1", netns="/run/netns/p1", extra=None):
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni"}
    c = dict(conf(sd), **(extra or {}))
    out, code = dispatch.run(plugin, env, json.dumps(c).encode())
    return code, (json.loads(out) if out else None)


def allocations(sd):
    return {a.container_id: a.address for a in IpamStore(sd).read().allocations.values()}


def test_add_whose_caller_hung_up_rolls_back_everything(node):
    dp, plugin, _, sd = node
    with deadline.scope(time.monotonic() + 30, gone=lambda: True):
        code, err = call(plugin, "ADD", sd)
    assert code == 1 and err["code"] == 11 and "abandoned" in err["msg"] and "hung up" in err["msg"]
    assert dp.hosts == {} and EndpointStore(sd).all() == {} and allocations(sd) == {}


def test_add_finishing_past_its_deadline_rolls_back(node):
    dp, plugin, _, sd = node
    with deadline.scope(time.monotonic() - 0.001):
        code, err = call(plugin, "ADD", sd)
    assert code == 1 and err["code"] == 11 and "deadline" in err["msg"]
    assert dp.hosts == {} and EndpointStore(sd).all() == {} and allocations(sd) == {}


def test_repeated_add_for_a_gone_caller_keeps_the_pod(node):
    """The second ADD created nothing: abandoning it must not undo the first one's pod."""
    dp, plugin, _, sd = node
    code, first = call(plugin, "ADD", sd)
    assert code == 0
    with deadline.scope(time.monotonic() + 30, gone=lambda: True):
        code, again = call(plugin, "ADD", sd)
    assert code == 0 and again == first
    assert list(dp.hosts) == [host_ifname("vnet", "c1", "eth0")] and allocations(sd) == {"c1": "10.240.0.36/16"}


def test_failed_add_keeps_an_allocation_it_did_not_create(node):
    """An allocation left by an earlier ADD (killed before its record) may be carried by a veth:
    a later ADD that fails must not release it."""
    dp, plugin, ipam, sd = node
    held, _ = ipam.add_reporting(*_ipam_call(sd, "c1"))
    dp.fail_on = "create"
    code, err = call(plugin, "ADD", sd)
    assert code == 1 and err["code"] == 102
    assert allocations(sd) == {"c1": held.ips[0].address}


def test_failed_add_releases_the_allocation_it_created(node):
    dp, plugin, _, sd = node
    dp.fail_on = "configure"
    code, err = call(plugin, "ADD", sd)
    assert code == 1 and err["code"] == 102
    assert allocations(sd) == {} and dp.hosts == {}


def test_retried_add_replaces_a_dead_calls_veth_and_reuses_its_address(node):
    dp, plugin, ipam, sd = node
    code, first = call(plugin, "ADD", sd)
    EndpointStore(sd).remove("vnet/c1/eth0")  # the first ADD died before its record
    dp.pods.clear()
    code, again = call(plugin, "ADD", sd)
    assert code == 0 and again["ips"] == first["ips"]
    assert list(dp.hosts) == [host_ifname("vnet", "c1", "eth0")]


def _ipam_call(sd, cid):
    from vnetcni.cni.config import parse_netconf
    from vnetcni.cni.invocation import Invocation

    return (Invocation(command="ADD", container_id=cid, ifname="eth0", netns="/run/netns/p1"),
            parse_netconf(conf(sd)))


def test_a_call_waits_for_the_attachment_and_gives_up_at_its_deadline(node):
    dp, plugin, _, sd = node
    path = attachments.lock_path(os.path.join(sd, "locks"), "vnet", "c1", "eth0")
    fd = locks.acquire(path, timeout=1, transient=True)
    try:
        start = time.monotonic()
        with deadline.scope(time.monotonic() + 0.3):
            code, err = call(plugin, "ADD", sd)
        assert time.monotonic() - start < 3
        assert code == 1 and err["code"] == 11 and path in err["msg"] and "vnet/c1/eth0" in err["msg"]
        assert dp.hosts == {} and allocations(sd) == {}
        for verb in ("DEL", "CHECK"):
            with deadline.scope(time.monotonic() + 0.1):
                assert call(plugin, verb, sd)[1]["code"] == 11
    finally:
        locks.release(path, fd, transient=True)
    assert not os.path.exists(path)
    assert call(plugin, "ADD", sd)[0] == 0
    assert os.path.exists(path) and not locks.is_held(path)  # kept while the attachment lives
    assert call(plugin, "DEL", sd)[0] == 0
    assert not os.path.exists(path)  # its DEL removes it


def test_a_call_waits_for_the_attachment_until_its_own_deadline_not_the_lock_default(node, monkeypatch):
    """Contention is not a stuck holder: a call whose caller still waits keeps waiting past the
    lock's default (made tiny here) and gets the attachment when its holder is done."""
    dp, plugin, _, sd = node
    monkeypatch.setattr(locks, "DEFAULT_TIMEOUT", 0.05)
    path = attachments.lock_path(os.path.join(sd, "locks"), "vnet", "c1", "eth0")
    fd = locks.acquire(path, timeout=1, transient=True)
    releaser = threading.Timer(0.5, locks.release, (path, fd))
    releaser.start()
    try:
        with deadline.scope(time.monotonic() + 20):
            code, answer = call(plugin, "ADD", sd)
    finally:
        releaser.join()
    assert code == 0, answer
    assert allocations(sd) == {"c1": answer["ips"][0]["address"]}


def test_other_attachments_do_not_wait(node):
    dp, plugin, _, sd = node
    with locks.flocked(attachments.lock_path(os.path.join(sd, "locks"), "vnet", "c1", "eth0"), transient=True):
        with deadline.scope(time.monotonic() + 5):
            code, _ = call(plugin, "ADD", sd, cid="c2", netns="/run/netns/p2")
    assert code == 0


def test_gc_skips_an_attachment_whose_call_is_in_flight(node):
    dp, plugin, _, sd = node
    assert call(plugin, "ADD", sd, cid="c1", netns="/run/netns/p1")[0] == 0
    assert call(plugin, "ADD", sd, cid="c2", netns="/run/netns/p2")[0] == 0
    with locks.flocked(attachments.lock_path(os.path.join(sd, "locks"), "vnet", "c1", "eth0"), transient=True):
        code, out = call(plugin, "GC", sd, extra={"cni.dev/valid-attachments": []})
        assert code == 0, out
    assert allocations(sd) == {"c1": "10.240.0.36/16"}
    assert list(EndpointStore(sd).all()) == ["vnet/c1/eth0"]
    assert list(dp.hosts) == [host_ifname("vnet", "c1", "eth0")]
    assert call(plugin, "GC", sd, extra={"cni.dev/valid-attachments": []})[0] == 0
    assert allocations(sd) == {} and dp.hosts == {}


def test_overlapping_calls_for_one_attachment_never_interleave(node):
    """Threads (like vnetd's workers) racing ADD/DEL/CHECK on one attachment: the fake dataplane
    is not thread-safe, so interleaving would corrupt it; at the end the state is coherent."""
    dp, plugin, _, sd = node
    gate = threading.Barrier(12)
    codes = []

    def worker(i):
        gate.wait()
        for j in range(10):
            verb = ("ADD", "DEL", "ADD", "CHECK")[(i + j) % 4]
            codes.append((verb, call(plugin, verb, sd)[0]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(code == 0 for verb, code in codes if verb != "CHECK"), codes
    recs = EndpointStore(sd).all()
    allocs = allocations(sd)
    if recs:
        assert list(allocs) == ["c1"] and recs["vnet/c1/eth0"].ips == [allocs["c1"]]
        assert list(dp.hosts) == [host_ifname("vnet", "c1", "eth0")]
    else:
        assert allocs == {} and dp.hosts == {}


def test_vnet_ipam_alone_serialises_and_rolls_back_only_what_it_created(tmp_path):
    sd = str(tmp_path)
    ipam = IpamPlugin(source_factory=lambda cfg: FakeMetadataSource(XML))
    inv, c = _ipam_call(sd, "c1")
    with deadline.scope(time.monotonic() + 30, gone=lambda: True):
        with pytest.raises(deadline.Abandoned):
            ipam.add(inv, c)
    assert allocations(sd) == {}
    first = ipam.add(inv, c).ips[0].address
    with deadline.scope(time.monotonic() + 30, gone=lambda: True):
        assert ipam.add(inv, c).ips[0].address == first  # it existed: kept
    assert allocations(sd) == {"c1": first}


def test_sweep_removes_only_lock_files_nobody_holds(tmp_path):
    lock_dir = str(tmp_path / "locks")
    stale = attachments.lock_path(lock_dir, "n", "dead", "eth0")
    live = attachments.lock_path(lock_dir, "n", "busy", "eth0")
    os.makedirs(lock_dir)
    open(stale, "w").close()  # what a killed holder leaves
    with locks.flocked(live, transient=True):
        assert attachments.sweep(lock_dir) == 1
        assert not os.path.exists(stale) and os.path.exists(live)
    assert attachments.sweep(lock_dir) == 0 and os.listdir(lock_dir) == []
