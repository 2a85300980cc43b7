"""Daemons of the fabric (metadata services, vnetd): started inside a node, stopped by pid.

A daemon is started in its own session so it outlives the `vnetctl fabric up` that started it;
its pid goes into fabric.json. Before signalling a recorded pid we check that the process still
lives in the namespace it was started in, or names one of the fabric's files in its arguments:
a pid reused by an unrelated process is never killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ..dataplane.netns import netns_path
from . import kernel


# Daemons this process started and has not reaped yet: kept so that stopping one also reaps it
# (a `vnetctl fabric up` exits and leaves them to init; a test that built the fabric in-process
# stops and reaps its own children).
_spawned: dict[int, subprocess.Popen] = {}


def spawn_in_netns(netns: str, argv: list[str], log_path: str) -> int:
    """Start argv inside netns, detached, output appended to log_path; its pid."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True)
    _spawned[proc.pid] = proc
    return proc.pid  # `ip netns exec` execs argv: this is the daemon's own pid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def in_netns(pid: int, netns: str) -> bool:
    """True when pid is alive and its network namespace is /run/netns/<netns>."""
    try:
        mine = os.stat(f"/proc/{pid}/ns/net")
        theirs = os.stat(netns_path(netns))
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino) and alive(pid)


def mentions(pid: int, needle: str) -> bool:
    """True when pid is alive and one of its arguments names `needle` (a file of our fabric):
    how a daemon is recognised after its namespace was deleted under it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return alive(pid) and needle.encode() in args


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours, so it leaves no zombie (init reaps the others)."""
    proc = _spawned.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _spawned[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it


def _signal(pid: int, sig: int) -> bool:
    """Send sig; False when the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Wait up to `seconds` for every pid to exit, reaping our own children; those still alive."""
    deadline = time.monotonic() + seconds
    while True:
        for pid in pids:
            _reap(pid)
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def _terminate(pids: list[int], grace: float) -> list[int]:
    """SIGTERM to every pid at once, one shared grace period, then SIGKILL to what is left;
    the pids that were signalled (those not already gone)."""
    signalled = [pid for pid in pids if _signal(pid, signal.SIGTERM)]
    survivors = _wait_gone(signalled, grace)
    for pid in survivors:
        _signal(pid, signal.SIGKILL)
    _wait_gone(survivors, 5.0)
    for pid in pids:
        _reap(pid)
    return signalled


def stop(pid: int, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone."""
    _terminate([pid], grace)


def kill_all_in(netns: str) -> list[int]:
    """Stop every process left in one of our namespaces (a crashed run's daemons, listeners),
    all at once; the pids stopped."""
    return _terminate([pid for pid in kernel.netns_pids(netns) if pid != os.getpid()], grace=1.0)
