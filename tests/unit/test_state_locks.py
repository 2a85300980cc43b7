"""state/locks.py: flocks with a deadline end in code 11 naming the lock, never hang."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from vnetcni.cni.errors import CNIError, TRY_AGAIN_LATER
from vnetcni.state import locks

HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()          # hold until the test closes our stdin (or kills us)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock; .release() ends it."""
    procs = []

    def start(path: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_uncontended_lock_creates_file_and_directory(tmp_path):
    path = str(tmp_path / "locks" / "deep" / "a.lock")
    with locks.flocked(path, timeout=1):
        assert os.path.exists(path)
        assert locks.is_held(path)
    assert not locks.is_held(path)


def test_contention_from_another_process_times_out_with_code_11(tmp_path, holder):
    path = str(tmp_path / "x.lock")
    holder(path)
    start = time.monotonic()
    with pytest.raises(CNIError) as err:
        with locks.flocked(path, timeout=0.3, purpose="attachment net/abc/eth0"):
            pytest.fail("acquired a lock another process holds")
    waited = time.monotonic() - start
    assert err.value.code == TRY_AGAIN_LATER
    assert isinstance(err.value, locks.LockTimeout)
    assert path in err.value.msg and "attachment net/abc/eth0" in err.value.msg
    assert "timed out" in err.value.msg
    assert 0.3 <= waited < 3.0
    assert err.value.to_dict("1.0.0")["code"] == 11


def test_deadline_in_the_past_fails_at_once_when_contended(tmp_path, holder):
    path = str(tmp_path / "x.lock")
    holder(path)
    start = time.monotonic()
    with pytest.raises(locks.LockTimeout):
        locks.acquire(path, deadline=time.monotonic() - 1)
    assert time.monotonic() - start < 1.0


def test_earlier_of_timeout_and_deadline_wins(tmp_path, holder):
    path = str(tmp_path / "x.lock")
    holder(path)
    start = time.monotonic()
    with pytest.raises(locks.LockTimeout):
        locks.acquire(path, timeout=30, deadline=time.monotonic() + 0.2)
    assert time.monotonic() - start < 3.0


def test_waiter_gets_the_lock_when_the_holder_dies(tmp_path, holder):
    path = str(tmp_path / "x.lock")
    p = holder(path)
    assert locks.is_held(path)
    threading.Timer(0.2, p.kill).start()
    fd = locks.acquire(path, timeout=10)
    os.close(fd)
    assert not locks.is_held(path)


def test_threads_of_one_process_exclude_each_other(tmp_path):
    path = str(tmp_path / "x.lock")
    inside = [0]
    peak = [0]
    guard = threading.Lock()

    def worker():
        for _ in range(20):
            with locks.flocked(path, timeout=10):
                with guard:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0.0005)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1


def test_shared_locks_coexist_and_block_an_exclusive_one(tmp_path):
    path = str(tmp_path / "x.lock")
    with locks.flocked(path, shared=True, timeout=1), locks.flocked(path, shared=True, timeout=1):
        with pytest.raises(locks.LockTimeout):
            locks.acquire(path, timeout=0.05)


def test_try_acquire_and_is_held_do_not_wait(tmp_path, holder):
    path = str(tmp_path / "x.lock")
    assert not locks.is_held(path)
    assert not os.path.exists(path)  # is_held is a read: it creates nothing
    fd = locks.try_acquire(path)
    assert fd is not None
    assert locks.try_acquire(path) is None  # a second descriptor in this process is refused
    os.close(fd)
    holder(path)
    assert locks.try_acquire(path) is None
    assert locks.is_held(path)


def test_unopenable_lock_is_an_io_error_not_a_hang(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CNIError) as err:
        locks.acquire(str(blocker / "x.lock"), timeout=0.1)  # a file where a directory should be
    assert err.value.code == 5
    assert "x.lock" in err.value.msg
