"""Entering network namespaces, per thread, with setns(2).

setns(CLONE_NEWNET) moves only the calling thread, so a daemon can serve several pods at once.
A netlink socket stays in the namespace it was opened in: open it inside, step back out, use it.

A pod's namespace is reached through open_netns(path). In-process that opens the path. A vnetd
worker serving a front door runs inside callers_netns(): the front door, in the runtime's mount
namespace, opened CNI_NETNS and passed the descriptor over the socket (SCM_RIGHTS), and the
path then resolves to that descriptor. vnetd never opens a caller's namespace by path: its mount
namespace (a container) need not see the runtime's /var/run/netns. Both ways check that the
descriptor is a network namespace.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"  # where `ip netns add NAME` bind-mounts a named namespace
_setns = getattr(os, "setns", None)  # Python 3.12+; ctypes otherwise, loaded on first use


def _libc_setns(fd: int, nstype: int) -> None:
    global _setns
    import ctypes  # ~2 ms of start-up: a plugin's DEL never enters a namespace, so not at import

    libc = ctypes.CDLL(None, use_errno=True)

    def setns_(fd: int, nstype: int) -> None:
        if libc.setns(fd, nstype) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    _setns = setns_
    setns_(fd, nstype)


def netns_path(name: str) -> str:
    """The path of the named network namespace NAME (as `ip netns` names it)."""
    return f"{NETNS_DIR}/{name}"


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    (_setns or _libc_setns)(fd, nstype)


def is_netns(path: str) -> bool:
    """True if path is a network namespace (a bind mount of nsfs, or /proc/PID/ns/net)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return _is_nsfs(fd)
    finally:
        os.close(fd)


_caller = threading.local()


@contextlib.contextmanager
def callers_netns(path: str, fd: int | None = None, error: int = 0) -> Iterator[None]:
    """This thread serves a caller whose CNI_NETNS is `path`: open_netns(path) gives a copy of
    `fd` (the descriptor the caller passed) or raises `error` (the errno the caller got opening
    it); any other path is refused. The caller keeps ownership of fd."""
    _caller.ns = (path, fd, error)
    try:
        yield
    finally:
        _caller.ns = None


def open_netns(path: str) -> int:
    """A new close-on-exec descriptor of the network namespace at `path` (see the module's
    docstring for vnetd). OSError when it cannot be opened or is no network namespace."""
    import fcntl

    served = getattr(_caller, "ns", None)
    if served is None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    else:
        cpath, cfd, error = served
        if path != cpath or not path:
            raise OSError(errno.ENOENT, "not the network namespace the caller passed")
        if cfd is None:
            error = error or errno.ENOENT
            raise OSError(error, os.strerror(error))
        fd = fcntl.fcntl(cfd, fcntl.F_DUPFD_CLOEXEC, 0)
    if not _is_nsfs(fd):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a network namespace")
    return fd


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
    """Run the body with this thread inside the network namespace at `path`.

    If the thread cannot go back home afterwards, it must never run anything else: whatever it
    did next (serve another pod, open a socket, delete a veth by name) would happen inside this
    pod's namespace. The process is then ended at once (stranded()), loudly."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)  # no buffered file: 2 calls, not 6
    try:
        target = open_netns(path)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                setns(home)
            except OSError as exc:
                stranded(path, exc)
    finally:
        os.close(home)


def stranded(path: str, exc: OSError) -> None:
    """A thread is stuck in the namespace at `path`: end the process (exit status 70) with a
    clear message. Killing only the thread is not possible in Python, and any code after this
    point (a rollback, the next request of a vnetd worker) would act in the wrong namespace.
    vnetd's supervisor restarts it; a plugin's runtime sees the call fail."""
    import sys
    import threading

    msg = (f"FATAL: thread {threading.current_thread().name} could not return from network namespace "
           f"{path} to its own ({exc.strerror or exc}); exiting so that nothing runs in the pod's namespace")
    try:
        print(f"vnet-cni: {msg}", file=sys.stderr, flush=True)
    finally:
        os._exit(70)


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
        fd = open_netns(path)
    except OSError as exc:
        return exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EINVAL)
    os.close(fd)
    return False
