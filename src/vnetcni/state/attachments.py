"""One attachment, one operation at a time.

An attachment is (network, container ID, interface name): what one ADD creates and one DEL
removes. Runtimes do send overlapping calls for one attachment (a retried ADD after a timeout, a
DEL for a sandbox whose ADD is still running); run at once they would share one allocation and
one deterministic veth name, and one call's rollback would undo the other's success. So every
ADD, DEL and CHECK holds the attachment's lock for its whole run: a flock file under the node's
lock directory (NodeLayout.lock_dir, `<stateDir>/locks/`), named by a hash of the attachment, that
lives from the attachment's first call to its DEL (or GC; vnetd's start sweeps files nobody holds). flock belongs to an open file
description, so vnetd's worker threads, vnetd and a plugin run in-process by the runtime all
exclude each other; the kernel releases it if the holder dies. The wait ends at the call's
deadline (or the lock's default) with code 11. GC skips attachments whose lock is held: their
ADD (or DEL) is still in flight.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from ..cni import deadline
from . import locks
from .digest import sha256_hex


def lock_path(lock_dir: str, network: str, container_id: str, ifname: str) -> str:
    digest = sha256_hex(f"{network}/{container_id}/{ifname}".encode())[:32]
    return os.path.join(lock_dir, f"attachment-{digest}.lock")


@contextlib.contextmanager
def exclusive(lock_dirs: Iterable[str], network: str, container_id: str, ifname: str,
              last: bool = False) -> Iterator[None]:
    """Hold the attachment's lock in each lock directory (in the order given; re-entrant on this
    thread), waiting until the call's deadline (none: locks.DEFAULT_TIMEOUT). `last` (a DEL):
    the lock file is removed on release."""
    what = f"attachment {network}/{container_id}/{ifname}"
    call = deadline.current()
    until = None if call is None else call.deadline
    keep = None if call is None else call.until_answered  # vnetd: held until the answer is sent
    with contextlib.ExitStack() as stack:
        for sd in dict.fromkeys(lock_dirs):
            # A call with a deadline waits until it (giving up earlier would fail a call whose
            # caller still waits); one without waits the lock's default.
            release = locks.hold(lock_path(sd, network, container_id, ifname), deadline=until,
                                 timeout=None if until is not None else locks.DEFAULT_TIMEOUT,
                                 purpose=what, transient=True, remove=last)
            if keep is not None:
                keep.append(release)
            else:
                stack.callback(release)
        yield


@contextlib.contextmanager
def unless_busy(lock_dir: str, network: str, container_id: str, ifname: str) -> Iterator[bool]:
    """For GC: hold the attachment's lock if nobody else does (True), else hold nothing (False)."""
    path = lock_path(lock_dir, network, container_id, ifname)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locks.holding(path, timeout=0, transient=True))
            free = True
        except locks.LockTimeout:
            free = False
        yield free


def busy(lock_dir: str, network: str, container_id: str, ifname: str) -> bool:
    """Whether another call (thread or process) holds the attachment now. Reads only."""
    return locks.busy(lock_path(lock_dir, network, container_id, ifname))


def sweep(lock_dir: str) -> int:
    """Remove the lock files a killed holder left (nobody holds them); returns how many. Each
    is taken (without waiting) and released like any transient lock, so a call starting at the
    same time is never confused."""
    try:
        names = [n for n in os.listdir(lock_dir) if n.startswith("attachment-") and n.endswith(".lock")]
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(lock_dir, name)
        try:
            fd = locks.acquire(path, timeout=0, transient=True)
        except locks.LockTimeout:
            continue  # a call holds it: not stale
        except Exception:
            continue
        locks.release(path, fd, transient=True)
        removed += 1
    return removed
