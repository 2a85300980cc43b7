"""Kernel flocks with a deadline: waiting for a lock ends in a clear CNI error, never a hang.

flock(2) belongs to an open file description: every acquisition here opens its own descriptor,
so two threads of one process (vnetd's workers) exclude each other exactly like two processes,
and the kernel releases the lock when its holder dies (a crashed plugin never blocks a node).
The wait polls LOCK_NB with short, growing sleeps (a blocking flock cannot be given a timeout
without signals, which threads cannot use); an uncontended acquisition is one open + one flock.
When the deadline passes the caller gets code 11 (TRY_AGAIN_LATER) naming the lock file: the
runtime retries the call later, as the spec intends.

A *transient* lock file may be removed while nobody holds it (by whoever holds it last, before
releasing), for locks named after something short-lived such as one pod attachment: a node does
not collect a file per pod it ever ran. An acquirer that finds it locked a file already removed
opens the new one and tries again. (Removing costs more than the lock itself, ~0.2 ms on tmpfs,
so the holder chooses: `release(..., transient=True)` removes.)
`holding()` is re-entrant per thread: a handler that holds a lock can call another handler that
takes the same one (vnet's ADD calling vnet-ipam in-process).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator

from ..cni import deadline as deadline_
from ..cni.errors import CNIError, IO_FAILURE, TRY_AGAIN_LATER

# How long a wait lasts when its call has no deadline of its own (a plugin the runtime runs
# in-process: it kills the plugin on its own timeout; kubelet allows a CRI call 2 minutes) or
# for state-file locks: generous, because ordinary contention must not fail a call. A queue of
# contenders is not a stuck holder: 64 ADD/DEL processes at once on a 2-core node each hold
# ipam.json for one fsynced write (milliseconds idle, up to hundreds of ms under I/O load), so
# the last waits seconds (the former 10 s could end such a burst's calls with code 11 on a
# loaded machine). Still a deadline: a stopped holder ends a call with code 11, never a hang.
# A call through vnetd waits for its attachment until its own deadline (cni/deadline.py).
DEFAULT_TIMEOUT = 60.0

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
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def acquire(path: str, *, timeout: float | None = None, deadline: float | None = None,
            shared: bool = False, purpose: str = "", transient: bool = False) -> int:
    """Open `path` (created, with its directory, if missing) and flock it; returns the fd that
    holds the lock (close it to release; a transient one: `release(path, fd, transient=True)`).
    Waits until `deadline` (time.monotonic()) or for `timeout` seconds (DEFAULT_TIMEOUT if
    neither is given; the earlier one wins if both are), then raises LockTimeout (code 11)."""
    start = time.monotonic()
    limit = start + (DEFAULT_TIMEOUT if timeout is None and deadline is None else
                     timeout if timeout is not None else float("inf"))
    if deadline is not None:
        limit = min(limit, deadline)
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    sleep = _FIRST_SLEEP
    fd = -1
    try:
        fd = _open(path)
        while True:
            try:
                fcntl.flock(fd, op)
                if not transient or _still_linked(path, fd):
                    return fd
                os.close(fd)  # its holder removed it as we opened it: take the new file
                fd = -1
                fd = _open(path)
                continue
            except BlockingIOError:
                pass
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise CNIError(IO_FAILURE, f"cannot lock {path}: {exc.strerror}") from None
            now = time.monotonic()
            if now >= limit:
                deadline_.note_lock_timeout(path)
                raise LockTimeout(path, now - start, purpose)
            time.sleep(min(sleep, limit - now))
            sleep = min(sleep * 2, _MAX_SLEEP)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        raise CNIError(IO_FAILURE, f"cannot open lock {path}: {exc.strerror}") from None
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def _still_linked(path: str, fd: int) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def release(path: str, fd: int, *, transient: bool = False) -> None:
    """Release a lock acquire() returned; a transient lock's file is removed first (while held)."""
    try:
        if transient:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def flocked(path: str, *, timeout: float | None = None, deadline: float | None = None,
            shared: bool = False, purpose: str = "", transient: bool = False) -> Iterator[None]:
    """Hold the flock on `path` for the body (see acquire for the deadline)."""
    fd = acquire(path, timeout=timeout, deadline=deadline, shared=shared, purpose=purpose,
                 transient=transient)
    try:
        yield
    finally:
        release(path, fd, transient=transient)


_held = threading.local()


def _held_paths() -> set[str]:
    paths = getattr(_held, "paths", None)
    if paths is None:
        paths = _held.paths = set()
    return paths


@contextlib.contextmanager
def holding(path: str, *, timeout: float | None = None, deadline: float | None = None,
            purpose: str = "", transient: bool = False) -> Iterator[None]:
    """An exclusive flocked() that is re-entrant on this thread (a nested holding() of the same
    path is free and releases nothing)."""
    paths = _held_paths()
    if path in paths:
        yield
        return
    with flocked(path, timeout=timeout, deadline=deadline, purpose=purpose, transient=transient):
        paths.add(path)
        try:
            yield
        finally:
            paths.discard(path)


def hold(path: str, *, timeout: float | None = None, deadline: float | None = None,
         purpose: str = "", transient: bool = False, remove: bool = False):
    """Like holding(), for a lock whose release comes later: returns the function that releases
    it (a no-op if this thread held it already; `remove`: a transient file is removed first).
    Until then the lock counts as held here."""
    paths = _held_paths()
    if path in paths:
        return lambda: None
    fd = acquire(path, timeout=timeout, deadline=deadline, purpose=purpose, transient=transient)
    paths.add(path)

    def release_it() -> None:
        paths.discard(path)
        release(path, fd, transient=transient and remove)

    return release_it


def held_here(path: str) -> bool:
    """Whether this thread holds `path` through holding()."""
    return path in _held_paths()


def busy(path: str) -> bool:
    """Whether someone other than this thread holds the lock now (reads only)."""
    return not held_here(path) and is_held(path)


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
