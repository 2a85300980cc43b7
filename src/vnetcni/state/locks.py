"""Kernel flocks with a deadline: waiting for a lock ends in a clear CNI error, never a hang.

flock(2) belongs to an open file description: every acquisition here opens its own descriptor,
so two threads of one process (vnetd's workers) exclude each other exactly like two processes,
and the kernel releases the lock when its holder dies (a crashed plugin never blocks a node).
The wait polls LOCK_NB with short, growing sleeps (a blocking flock cannot be given a timeout
without signals, which threads cannot use); an uncontended acquisition is one open + one flock.
When the deadline passes the caller gets code 11 (TRY_AGAIN_LATER) naming the lock file: the
runtime retries the call later, as the spec intends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator

from ..cni.errors import CNIError, IO_FAILURE, TRY_AGAIN_LATER

# How long a call waits for a lock unless it says otherwise: well under a runtime's CNI timeout
# (kubelet gives a call minutes; the front door's deadline is seconds), and far above a normal
# holder's critical section (a durable write takes milliseconds, a whole ADD tens of them).
DEFAULT_TIMEOUT = 10.0

_FIRST_SLEEP = 0.0005
_MAX_SLEEP = 0.02


class LockTimeout(CNIError):
    """The deadline passed while another holder kept the lock (code 11: try again later)."""

    def __init__(self, path: str, waited: float, purpose: str = "") -> None:
        what = f" ({purpose})" if purpose else ""
        super().__init__(
            TRY_AGAIN_LATER,
            f"timed out after {waited:.1f}s waiting for lock {path}{what}",
            "another operation holds it; retry the call later",
        )
        self.path = path


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        directory = os.path.dirname(path)
        if not directory:
            raise
        os.makedirs(directory, mode=0o755, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def acquire(path: str, *, timeout: float | None = None, deadline: float | None = None,
            shared: bool = False, purpose: str = "") -> int:
    """Open `path` (created, with its directory, if missing) and flock it; returns the fd that
    holds the lock (close it to release). Waits until `deadline` (time.monotonic()) or for
    `timeout` seconds (DEFAULT_TIMEOUT if neither is given; the earlier one wins if both are),
    then raises LockTimeout (code 11)."""
    start = time.monotonic()
    limit = start + (DEFAULT_TIMEOUT if timeout is None and deadline is None else
                     timeout if timeout is not None else float("inf"))
    if deadline is not None:
        limit = min(limit, deadline)
    try:
        fd = _open(path)
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"cannot open lock {path}: {exc.strerror}") from None
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    sleep = _FIRST_SLEEP
    try:
        while True:
            try:
                fcntl.flock(fd, op)
                return fd
            except BlockingIOError:
                pass
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise CNIError(IO_FAILURE, f"cannot lock {path}: {exc.strerror}") from None
            now = time.monotonic()
            if now >= limit:
                raise LockTimeout(path, now - start, purpose)
            time.sleep(min(sleep, limit - now))
            sleep = min(sleep * 2, _MAX_SLEEP)
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def flocked(path: str, *, timeout: float | None = None, deadline: float | None = None,
            shared: bool = False, purpose: str = "") -> Iterator[None]:
    """Hold the flock on `path` for the body (see acquire for the deadline)."""
    fd = acquire(path, timeout=timeout, deadline=deadline, shared=shared, purpose=purpose)
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def try_acquire(path: str, *, shared: bool = False) -> int | None:
    """The fd holding the lock if it is free right now, else None (never waits). A missing lock
    file is created (its directory must exist)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"cannot open lock {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def is_held(path: str) -> bool:
    """Whether some descriptor (in any process, this one included) holds the lock now. Reads
    only: a missing lock file means nobody holds it, and none is created. (A probe holds the
    lock for a moment: a contender polling in acquire just tries again.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"cannot open lock {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
