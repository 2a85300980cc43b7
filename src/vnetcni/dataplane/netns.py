"""Entering network namespaces by path, per thread, with setns(2).

setns(CLONE_NEWNET) moves only the calling thread, so a daemon can serve several pods at once.
A netlink socket stays in the namespace it was opened in: open it inside, step back out, use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from typing import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"  # where `ip netns add NAME` bind-mounts a named namespace
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> str:
    """The path of the named network namespace NAME (as `ip netns` names it)."""
    return f"{NETNS_DIR}/{name}"


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def is_netns(path: str) -> bool:
    """True if path is a network namespace (a bind mount of nsfs, or /proc/PID/ns/net)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return _is_nsfs(fd)
    finally:
        os.close(fd)


def _is_nsfs(fd: int) -> bool:
    # ioctl(NS_GET_NSTYPE) answers only on a namespace file, and says which kind it is.
    import fcntl

    NS_GET_NSTYPE = 0xB703
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


@contextlib.contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with this thread inside the network namespace at `path`."""
    with open("/proc/thread-self/ns/net", "rb") as home:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home.fileno())


def current_netns_id() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def same_netns(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == current_netns_id()


def netns_missing(path: str) -> bool:
    """True when the namespace at path is gone (or path is empty): DEL then works from the record."""
    if not path:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EINVAL)
    try:
        return not _is_nsfs(fd)
    finally:
        os.close(fd)
