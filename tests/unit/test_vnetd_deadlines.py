"""vnetd and deadlines: calls not started after their deadline or when their caller
hung up, ADDs rolled back, lock waits ended, and the counters `vnetctl status` shows."""

from __future__ import annotations

import json
import os
import threading
import socket
import time

import pytest

from vnetcni.cni import deadline
from vnetcni.cni.result import IPConfig, Result
from vnetcni.daemon import protocol, stats
from vnetcni.daemon.server import COMMIT_MARGIN, Server
from vnetcni.state import locks

CONF = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "vnet", "ipam": {"type": "vnet-ipam"}}).encode()
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}


class Plugin:
    """Records the deadline it saw; optionally waits on a lock or lets its caller go first."""

    def __init__(self) -> None:
        self.started = 0
        self.seen: float | None = None
        self.before_commit = None
        self.lock: str | None = None
        self.undone = 0

    def add(self, inv, conf):
        self.started += 1
        self.seen = deadline.wait_until()
        if self.lock:
            locks.acquire(self.lock, deadline=deadline.wait_until(), timeout=30)
        if self.before_commit:
            self.before_commit()
        try:
            deadline.commit_point()
        except deadline.Abandoned:
            self.undone += 1
            raise
        return Result(ips=[IPConfig("10.0.0.5/24", "10.0.0.1")])

    def delete(self, inv, conf):
        pass

    def check(self, inv, conf):
        pass


@pytest.fixture
def server(tmp_path):
    plugin = Plugin()
    srv = Server(str(tmp_path), lambda name: plugin if name == "vnet" else None)
    return srv, plugin, tmp_path


def request(timeout: float = 5.0) -> bytes:
    return protocol.encode_request("vnet", ENV, CONF, timeout=timeout)


def answer(srv, data, conn=None, received=None):
    out, code = protocol.decode_response(srv._handle(data, None, received, conn)[0])
    return code, json.loads(out) if out else None


def test_the_handler_sees_the_callers_deadline_less_a_margin(server):
    srv, plugin, _ = server
    code, out = answer(srv, request(5))
    assert code == 0, out
    assert 4 < plugin.seen - time.monotonic() < 5 - COMMIT_MARGIN + 0.01
    code, _ = answer(srv, request(0.5))
    assert code == 0 and plugin.seen - time.monotonic() < 0.5 - 0.05 + 0.01  # a tenth of a short one


def test_a_call_past_its_deadline_is_not_started_and_counted(server):
    srv, plugin, tmp = server
    srv.stats.start()
    code, err = answer(srv, request(1), received=time.monotonic() - 3)  # vnetd was stopped
    assert code == 1 and err["code"] == 11 and "did not start" in err["msg"] and "deadline" in err["msg"]
    assert err["cniVersion"] == "1.0.0"
    assert plugin.started == 0
    doc = stats.read(str(tmp / "vnetd-stats.json"))
    assert doc["counts"]["expired"] == 1 and "vnet ADD c1" in doc["last"]["call"]
    assert "1 call(s) failed by deadline" in stats.summary(doc) and "1 expired" in stats.summary(doc)


def test_a_call_whose_caller_hung_up_is_not_started(server):
    srv, plugin, _ = server
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.close()
    try:
        code, err = answer(srv, request(5), ours)
    finally:
        ours.close()
    assert code == 1 and err["code"] == 11 and "hung up" in err["msg"] and plugin.started == 0


def test_an_add_done_after_its_caller_hung_up_is_rolled_back_and_counted(server):
    srv, plugin, _ = server
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    plugin.before_commit = theirs.close  # the runtime gives up while the ADD runs
    try:
        code, err = answer(srv, request(5), ours)
    finally:
        ours.close()
    assert code == 1 and err["code"] == 11 and "abandoned" in err["msg"]
    assert plugin.undone == 1 and srv.stats.counts()["rolled_back"] == 1


def test_an_add_done_after_its_deadline_is_rolled_back(server):
    srv, plugin, _ = server
    plugin.before_commit = lambda: time.sleep(0.45)
    code, err = answer(srv, request(0.35))
    assert code == 1 and err["code"] == 11 and "deadline" in err["msg"]
    assert plugin.undone == 1 and srv.stats.counts()["rolled_back"] == 1


def test_a_lock_wait_ends_at_the_deadline_and_is_counted(server, tmp_path):
    srv, plugin, _ = server
    plugin.lock = str(tmp_path / "held.lock")
    fd = locks.acquire(plugin.lock, timeout=1)
    try:
        start = time.monotonic()
        code, err = answer(srv, request(0.5))
        assert time.monotonic() - start < 3
    finally:
        locks.release(plugin.lock, fd)
    assert code == 1 and err["code"] == 11 and plugin.lock in err["msg"]
    assert srv.stats.counts()["lock_timeout"] == 1


def test_no_counter_file_is_written_on_the_ordinary_path(server):
    srv, _, tmp = server
    for _ in range(3):
        assert answer(srv, request(5))[0] == 0
    assert not (tmp / "vnetd-stats.json").exists()  # only start() and a miss write it
    assert stats.summary({"counts": {}, "started": time.time()}).startswith("no call failed")


@pytest.fixture
def warm(tmp_path):
    """A Server with the real vnet and vnet-ipam handlers over the fake dataplane."""
    from vnetcni.dataplane.fake import FakeDataplane
    from vnetcni.ipam.metadata import render_node
    from vnetcni.ipam.plugin import IpamPlugin
    from vnetcni.ipam.sources import FakeMetadataSource
    from vnetcni.plugins.vnet import VnetPlugin

    xml = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", ["10.240.0.36", "10.240.0.37"])
    dp = FakeDataplane()
    dp.netns.add("/run/netns/x")
    vnet = VnetPlugin(dataplane_factory=lambda _l: dp,
                      ipam=IpamPlugin(source_factory=lambda cfg: FakeMetadataSource(xml)))
    sd = str(tmp_path)
    srv = Server(sd, lambda name: vnet if name == "vnet" else None)
    conf = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "vnet", "stateDir": sd,
                       "ipam": {"type": "vnet-ipam", "stateDir": sd}}).encode()
    return srv, dp, sd, protocol.encode_request("vnet", ENV, conf, timeout=5)


def test_an_add_whose_answer_cannot_be_delivered_is_undone_before_the_attachment_is_free(warm):
    """vnetd keeps the attachment locked until the answer is on the caller's socket: a retry
    cannot see a result that is about to be undone."""
    from vnetcni.ipam.store import IpamStore
    from vnetcni.plugins.endpoints import EndpointStore
    from vnetcni.state import attachments

    srv, dp, sd, data = warm
    lock = attachments.lock_path(os.path.join(sd, "locks"), "n", "c1", "eth0")
    answer, served = srv._handle(data, None, None, None)
    assert protocol.decode_response(answer)[1] == 0
    assert len(IpamStore(sd).read().allocations) == 1
    seen = []
    t = threading.Thread(target=lambda: seen.append(locks.busy(lock)))
    t.start()
    t.join()
    assert seen == [True]  # still locked: the answer is not delivered yet
    try:
        srv._undeliverable(*served)  # sendall failed: the runtime is gone
    finally:
        served[1].answered()
    assert IpamStore(sd).read().allocations == {} and EndpointStore(sd).all() == {} and dp.hosts == {}
    assert not locks.is_held(lock) and srv.stats.counts()["rolled_back"] == 1


def test_a_repeated_add_whose_answer_cannot_be_delivered_keeps_the_pod(warm):
    """Only what the call created is undone: a second ADD answering the first one's pod is not."""
    from vnetcni.ipam.store import IpamStore

    srv, dp, sd, data = warm
    answer, served = srv._answer(data), None  # the first ADD, delivered
    assert protocol.decode_response(answer)[1] == 0
    answer, served = srv._handle(data, None, None, None)
    assert protocol.decode_response(answer)[1] == 0 and not served[1].created
    try:
        srv._undeliverable(*served)
    finally:
        served[1].answered()
    assert len(IpamStore(sd).read().allocations) == 1 and len(dp.hosts) == 1
    assert srv.stats.counts() == {"expired": 0, "lock_timeout": 0, "rolled_back": 0, "unanswered": 1}


# --- work left until the answer is delivered (a new pod's gratuitous ARP) -------------------------
def test_outside_vnetd_nothing_is_deferred():
    assert not deadline.can_defer() and not deadline.after_answer(lambda: None)
    with deadline.scope(None):  # a scope that does not hold until answered: nothing deferred either
        assert not deadline.can_defer() and not deadline.after_answer(lambda: None)


def test_deferred_work_runs_once_after_a_delivered_answer_and_failures_are_returned():
    done, dropped, released = [], [], []
    with deadline.scope(None, hold_until_answered=True) as call:
        assert deadline.can_defer()
        call.until_answered.append(lambda: released.append(True))

        def fails():
            raise OSError(19, "no such device")

        assert deadline.after_answer(lambda: done.append(1), lambda: dropped.append(1))
        assert deadline.after_answer(fails)
        assert deadline.after_answer(lambda: done.append(3))
    assert done == [] and released == []  # nothing before the answer
    failed = call.run_deferred()
    assert done == [1, 3] and [str(e) for e in failed] == ["[Errno 19] no such device"]
    call.answered()
    assert dropped == [] and released == [True] and call.run_deferred() == []  # once only


def test_deferred_work_is_dropped_when_the_answer_is_not_delivered_and_locks_are_still_released():
    done, dropped, released = [], [], []
    with deadline.scope(None, hold_until_answered=True) as call:
        call.until_answered.append(lambda: released.append(True))

        def drop_fails():
            raise OSError("closing failed")

        deadline.after_answer(lambda: done.append(1), drop_fails)
        deadline.after_answer(lambda: done.append(2), lambda: dropped.append(2))
    call.answered()
    assert done == [] and dropped == [2] and released == [True]


class Deferring(Plugin):
    """An ADD that leaves work until its answer is delivered, and fails when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.done, self.dropped, self.fail = [], [], False

    def add(self, inv, conf):
        deadline.after_answer(lambda: self.done.append(inv.container_id), lambda: self.dropped.append(1))
        if self.fail:
            from vnetcni.cni.errors import CNIError

            raise CNIError(7, "failed on purpose")
        return super().add(inv, conf)


@pytest.mark.skipif(os.geteuid() != 0, reason="vnetd serves root callers only")
@pytest.mark.parametrize("fail", [False, True])
def test_vnetd_does_deferred_work_after_delivering_a_successful_answer_only(tmp_path, fail):
    plugin = Deferring()
    plugin.fail = fail
    srv = Server(str(tmp_path), lambda name: plugin if name == "vnet" else None)
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(request())
        theirs.shutdown(socket.SHUT_WR)
        srv._serve(ours)  # the request, its answer, then what was deferred (the caller's EOF first)
        out, code = protocol.decode_response(theirs.recv(65536))
    assert (code != 0) == fail
    assert (plugin.done, plugin.dropped) == (([], [1]) if fail else (["c1"], []))
