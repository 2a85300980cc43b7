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

from . import kernel


# Daemons this process started and has not stopped yet: kept so that stopping one also reaps it
# (a `vnetctl fabric up` exits and leaves them to init; a test that built the fabric in-process
# stops and reaps its own children).
_spawned: dict[int, subprocess.Popen] = {}


def spawn_in_netns(netns: str, argv: list[str], log_path: str, env: dict | None = None) -> int:
    """Start argv inside netns, detached, output appended to log_path; its pid."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True, env=env)
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
        theirs = os.stat(os.path.join(kernel.NETNS_DIR, netns))
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
    proc = _spawned.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _spawned[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it


def stop(pid: int, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone."""
    proc = _spawned.pop(pid, None)
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            _reap(pid)
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid):
                return
            time.sleep(0.02)
    _reap(pid)


def kill_all_in(netns: str) -> None:
    """Every process left in one of our namespaces (a crashed run's daemons, listeners)."""
    for pid in kernel.netns_pids(netns):
        if pid != os.getpid():
            stop(pid, grace=1.0)
