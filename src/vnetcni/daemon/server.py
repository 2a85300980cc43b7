"""vnetd's socket server: the plugins' verb handlers, warm, one thread per request.

No node-wide lock on the ADD path: each request runs on its own thread with its own netlink
sockets; the only serialised step is the address pool's read-modify-write (a kernel flock held
for a few milliseconds, shared with plugins running in-process). The metadata pool is refreshed
in the background (see refresher.py), so no ADD waits on the metadata service. Calls for one
attachment take turns (its flock, state/attachments.py).

Every request has a deadline (protocol.Request.deadline): a request whose deadline has passed,
or whose caller has hung up, is not started; the handlers' lock waits end at it; an ADD done
after it (or after its caller hung up) is rolled back (cni/deadline.py). Each such call is
counted (stats.py; `vnetctl status` and the metrics show them).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import socket
import struct
import threading
import time
from dataclasses import replace
from typing import Callable

from ..cni import deadline, dispatch
from ..cni.errors import DECODE_FAILURE, TRY_AGAIN_LATER, CNIError
from ..cni.invocation import MAX_STDIN_BYTES
from ..dataplane import netns as nsutil
from ..node.layout import NodeLayout
from ..state import attachments
from . import protocol
from .pending import PendingDeletes
from .stats import DeadlineStats

log = logging.getLogger("vnetd")
_READ_LIMIT = MAX_STDIN_BYTES + 64 * 1024  # the configuration plus the CNI_* header
WORKERS = 32  # persistent threads: each keeps its own warm netlink sockets
COMMIT_MARGIN = 0.25  # seconds: an ADD done closer than this to its caller's deadline is undone
READ_SECONDS = 10.0  # a front door sends its whole request at once: a slower one is dropped
MAX_FDS = 4  # descriptors read with a request (one is expected: the pod's netns)


class DaemonRunning(RuntimeError):
    pass


def bind_socket(path: str) -> socket.socket:
    """Bind the Unix socket root-only. A stale socket file (a killed vnetd) is replaced; a live
    one means another vnetd serves this state directory."""
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listening: stale
        else:
            raise DaemonRunning(f"another vnetd is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(256)
    return sock


def _hangup_probe(conn: socket.socket):
    """A cheap check whether the caller closed its end (POLLHUP: it hung up; a caller that only
    finished writing its request does not count)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLHUP | select.POLLERR)
    return lambda: bool(poller.poll(0))


def _peer_is_root(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(creds)
    return uid == 0


_UCRED = struct.Struct("3i")


def _io_timeout(conn: socket.socket, seconds: float) -> None:
    """Each read from and write to conn fails (EAGAIN, an OSError) after `seconds` without
    progress: the kernel's own timeouts on a blocking socket, so a read or a write is one
    system call (settimeout() would add a poll(2) before each)."""
    value = _TIMEVAL.pack(int(seconds), int(seconds % 1 * 1_000_000))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


_TIMEVAL = struct.Struct("@ll")


class Server:
    def __init__(self, state_dir: str, handlers: Callable[[str], object],
                 on_request: Callable[[dict], None] | None = None) -> None:
        self.layout = NodeLayout(state_dir)
        self.state_dir = self.layout.state_dir
        self.socket_path = self.layout.socket
        self._handlers = handlers
        self._on_request = on_request
        self.on_fallback: Callable[[str], None] | None = None  # metrics: requests handed back
        self.stats = DeadlineStats(self.layout.daemon_stats)
        self._netns = protocol.netns_id()
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._inflight = 0
        self._cond = threading.Condition()
        self._workers = [threading.Thread(target=self._work, name=f"vnetd-worker-{i}", daemon=True)
                         for i in range(WORKERS)]
        self.pending = PendingDeletes(self.layout, self._replay)
        self.teardowns = None  # vnetd's reaper (reaper.py): replayed DELs' teardowns done before listening
        self.after_answer = None  # vnetd's after-answer queue (afteranswer.py); None: done by the worker

    def start(self) -> None:
        self.layout.ensure()
        # DELs recorded by no-fallback front doors while no vnetd answered: done before serving.
        done = self.pending.carry_out_all()
        if done:
            log.info("carried out %d DEL(s) recorded while vnetd was not answering", done)
            if self.teardowns is not None:
                self.teardowns.reap_all()  # their veths, then their addresses: before anyone is served
        self._sock = bind_socket(self.socket_path)
        stale = attachments.sweep(self.layout.lock_dir)  # left by a killed vnetd or plugin
        if stale:
            log.info("removed %d attachment lock file(s) nobody held", stale)
        self.stats.start()
        self.pending.run_periodically(self._stopping)
        for w in self._workers:
            w.start()

    def _work(self) -> None:
        """Each worker accepts for itself, blocking in accept(2): the kernel wakes exactly one
        waiting worker per connection (an exclusive wait), with no thread in between. (A
        timeout on the listening socket would make it poll(2) instead, which wakes every idle
        worker for each connection: 31 GIL hand-offs and failed accepts per request.) stop()
        shuts the socket down, which ends every worker's accept."""
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError as exc:
                if self._stopping.is_set() or exc.errno in (errno.EINVAL, errno.EBADF):
                    return  # the listening socket was shut down or closed: stopping
                log.warning("accepting a connection failed: %s", exc)  # e.g. out of descriptors
                time.sleep(0.05)
                continue
            with self._cond:
                self._inflight += 1
            self._serve(conn)

    def serve_forever(self) -> None:
        self._stopping.wait()

    def stop(self, drain_seconds: float = 30.0) -> None:
        """Stop accepting, let requests in flight finish, remove the socket."""
        self._stopping.set()
        if self._sock is not None:
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the workers blocked in accept()
            self._sock.close()
        deadline = time.monotonic() + drain_seconds
        with self._cond:
            while self._inflight and time.monotonic() < deadline:
                self._cond.wait(0.1)

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            with conn:
                received = time.monotonic()
                _io_timeout(conn, READ_SECONDS)
                if not _peer_is_root(conn):
                    return  # the socket is 0600 already; belt and braces
                data = self._read(conn, fds)
                if data is None:
                    conn.sendall(protocol.encode_response(1, self._too_large()))
                    return
                if not data:
                    return  # a liveness probe that connected and said nothing
                answer, served = self._handle(data, fds, received, conn)
                try:
                    conn.sendall(answer)
                except OSError:
                    if served is not None:  # the caller gave up before its answer was ready
                        self._undeliverable(*served)
                    raise
                else:
                    # The end of the answer at once: a front door reads until EOF, and one that
                    # had to wait for it (vnetd stopped before closing) would report a failure
                    # for an ADD that stays done.
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_WR)
                    if served is not None and served[2] == 0:
                        self._after_answer(served[1], served[3])
                finally:
                    if served is not None:
                        served[1].answered()  # the attachment's lock is released only now
        except OSError as exc:
            log.warning("client connection failed: %s", exc)
        finally:
            for fd in fds:
                os.close(fd)
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def _after_answer(self, call: deadline.Call, what: str) -> None:
        """The work a successful call left until its answer was delivered (a new pod's
        gratuitous ARP: deadline.after_answer): handed to the after-answer queue, which does it
        soon (daemon/afteranswer.py); without one, done now. A failure is logged, never silent."""
        if self.after_answer is not None:
            self.after_answer.submit(call.take_deferred(), what)
            return
        for exc in call.run_deferred():
            log.warning("%s: after its answer: %s", what, exc)

    @staticmethod
    def _read(conn: socket.socket, fds: list[int]) -> bytes | None:
        """The whole request (None: over the size limit), with any descriptors that came along
        appended to fds (the caller closes them)."""
        chunks, size = [], 0
        while True:
            chunk, got, flags, _ = socket.recv_fds(conn, 65536, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
            fds.extend(got)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > _READ_LIMIT:
                return None
            chunks.append(chunk)

    @staticmethod
    def _too_large() -> bytes:
        """An explicit answer, not a silent close a front door would read as "try again"."""
        err = CNIError(DECODE_FAILURE, f"request to vnetd too large (more than {_READ_LIMIT} bytes of "
                                       "network configuration and CNI_* variables)")
        return dispatch.error_answer(err)[0]

    def _answer(self, data: bytes, fds: list[int] | None = None, received: float | None = None) -> bytes:
        answer, served = self._handle(data, fds, received, None)
        if served is not None:
            served[1].answered()
        return answer

    def _undeliverable(self, req: protocol.Request, call: deadline.Call, code: int, what: str,
                       missed: str) -> None:
        """The caller hung up before its answer could be sent. An ADD that succeeded is undone
        now, its attachment still locked: no retry has seen its result yet. (A call already
        counted as failed by deadline is not counted twice; a repeated ADD that only answered
        what an earlier one made is not undone.)"""
        if req.env.get("CNI_COMMAND") == "ADD" and code == 0 and call.created:
            out, undo = self._replay(replace(req, env={**req.env, "CNI_COMMAND": "DEL"}))
            if undo != 0:
                log.warning("could not undo %s after its caller left: %s", what, out[:300])
            self.stats.count("rolled_back", what)
        elif not missed:
            self.stats.count("unanswered", what)

    def _handle(self, data: bytes, fds: list[int] | None, received: float | None,
                conn: socket.socket | None) -> tuple[bytes, tuple | None]:
        """(the answer, (request, call, exit code, the call in a few words, the deadline miss
        already counted) when it was served here: call.answered() once the answer is delivered)."""
        started = time.perf_counter()
        try:
            req = protocol.decode_request(data, received)
        except protocol.ProtocolError as exc:
            log.warning("bad request: %s", exc)
            return self._fallback("bad request"), None
        if req.netns != self._netns:
            return self._fallback("other network namespace"), None  # the caller works in-process
        if req.version == 1 and req.env.get("CNI_NETNS"):
            return self._fallback("old front door"), None  # it cannot pass the netns: in-process
        plugin = self._handlers(req.plugin)
        if plugin is None:
            return self._fallback("unknown plugin"), None
        what = f"{req.plugin} {req.env.get('CNI_COMMAND', '')} {req.env.get('CNI_CONTAINERID', '')[:64]}"
        gone = _hangup_probe(conn) if conn is not None else None
        missed = ""
        call = deadline.Call(None, None)
        if req.expired() or (gone is not None and gone()):
            why = "its deadline had passed" if req.expired() else "its caller had hung up"
            out, code = self._error(req, CNIError(
                TRY_AGAIN_LATER, f"vnetd did not start this call: {why} when vnetd got to it",
                "vnetd was stopped or overloaded; nothing was done, retry the call"))
            missed = "expired"
        else:
            fd = fds[0] if req.wants_fd and fds else None
            error = 0 if fd is not None else (req.netns_errno or errno.EBADF)
            network = _network_name(req.stdin)
            why = self.pending.before(req, network) if req.env.get("CNI_COMMAND") != "VERSION" else ""
            if why:
                out, code = self._error(req, CNIError(TRY_AGAIN_LATER, why, "retry the operation"))
            else:
                # An ADD must be done a little before the caller's deadline to count: an answer
                # committed in the last instant could reach a caller that has just given up.
                commit_by = req.deadline - min(COMMIT_MARGIN, req.timeout / 10)
                with nsutil.callers_netns(req.env.get("CNI_NETNS", ""), fd, error), \
                        deadline.scope(commit_by, gone, hold_until_answered=True) as call:
                    try:
                        out, code = self.run(plugin, req)
                    except BaseException:
                        call.answered()
                        raise
                if call.rolled_back:
                    missed = "rolled_back"
                elif code != 0 and call.lock_timeout:
                    missed = "lock_timeout"
        if missed:
            self.stats.count(missed, what)
        if self._on_request is not None:
            rec = self._record(req.plugin, req.env, out, code, time.perf_counter() - started)
            if missed:
                rec["deadline_missed"] = missed  # metrics: vnetd_deadline_misses
            self._on_request(rec)
        return protocol.encode_response(code, out), (req, call, code, what, missed)

    def run(self, plugin, req: protocol.Request) -> tuple[bytes, int]:
        """One request's verb through the warm handler: (stdout, exit code). req.deadline says
        until when the caller waits."""
        return dispatch.run(plugin, req.env, req.stdin)

    def _replay(self, req: protocol.Request) -> tuple[bytes, int]:
        """A pending DEL (no caller, no descriptor: the namespace is not needed to delete)."""
        plugin = self._handlers(req.plugin)
        if plugin is None:
            return self._error(req, CNIError(DECODE_FAILURE, f"unknown plugin {req.plugin!r}"))
        with nsutil.callers_netns(req.env.get("CNI_NETNS", ""), None, errno.ENOENT):
            return self.run(plugin, req)

    @staticmethod
    def _error(req: protocol.Request, err: CNIError) -> tuple[bytes, int]:
        return dispatch.error_answer(err, req.stdin)

    def _fallback(self, reason: str) -> bytes:
        if self.on_fallback is not None:
            self.on_fallback(reason)
        return protocol.FALLBACK

    @staticmethod
    def _record(plugin: str, env: dict, out: bytes, code: int, seconds: float) -> dict:
        rec = {"plugin": plugin, "verb": env.get("CNI_COMMAND", ""),
               "container": env.get("CNI_CONTAINERID", ""), "ifname": env.get("CNI_IFNAME", ""),
               "duration_ms": round(seconds * 1000, 2), "result": "ok" if code == 0 else "error"}
        if code != 0:
            try:
                err = json.loads(out)
                rec["code"], rec["msg"] = err.get("code"), err.get("msg")
            except ValueError:
                pass
        return rec


def _network_name(stdin: bytes) -> object:
    try:
        conf = json.loads(stdin)
    except (ValueError, RecursionError):
        return None
    return conf.get("name") if isinstance(conf, dict) else None
