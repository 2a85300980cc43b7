"""vnetd's socket server: the plugins' verb handlers, warm, one thread per request.

No node-wide lock on the ADD path: each request runs on its own thread with its own netlink
sockets; the only serialised step is the address pool's read-modify-write (a kernel flock held
for a few milliseconds, shared with plugins running in-process). The metadata pool is refreshed
in the background (see refresher.py), so no ADD waits on the metadata service.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Callable

from ..cni import dispatch
from ..cni.invocation import MAX_STDIN_BYTES
from ..node.layout import NodeLayout
from . import protocol

log = logging.getLogger("vnetd")
_READ_LIMIT = MAX_STDIN_BYTES + 64 * 1024  # the configuration plus the CNI_* header
WORKERS = 32  # persistent threads: each keeps its own warm netlink sockets


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


def _peer_is_root(conn: socket.socket) -> bool:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == 0


class Server:
    def __init__(self, state_dir: str, handlers: Callable[[str], object],
                 on_request: Callable[[dict], None] | None = None) -> None:
        self.layout = NodeLayout(state_dir)
        self.state_dir = self.layout.state_dir
        self.socket_path = self.layout.socket
        self._handlers = handlers
        self._on_request = on_request
        self.on_fallback: Callable[[str], None] | None = None  # metrics: requests handed back
        self._netns = protocol.netns_id()
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._inflight = 0
        self._cond = threading.Condition()
        self._workers = [threading.Thread(target=self._work, name=f"vnetd-worker-{i}", daemon=True)
                         for i in range(WORKERS)]

    def start(self) -> None:
        self.layout.ensure()
        self._sock = bind_socket(self.socket_path)
        self._sock.settimeout(0.5)  # workers look at the stop flag twice a second
        for w in self._workers:
            w.start()

    def _work(self) -> None:
        """Each worker accepts for itself: the kernel hands a connection to one waiting worker,
        with no thread in between."""
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # the listening socket was closed: stopping
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
            self._sock.close()
        deadline = time.monotonic() + drain_seconds
        with self._cond:
            while self._inflight and time.monotonic() < deadline:
                self._cond.wait(0.1)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(60)
                if not _peer_is_root(conn):
                    return  # the socket is 0600 already; belt and braces
                data = self._read(conn)
                if not data:
                    return  # oversized, or a liveness probe that connected and said nothing
                conn.sendall(self._answer(data))
        except OSError as exc:
            log.warning("client connection failed: %s", exc)
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    @staticmethod
    def _read(conn: socket.socket) -> bytes | None:
        chunks, size = [], 0
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > _READ_LIMIT:
                return None
            chunks.append(chunk)

    def _answer(self, data: bytes) -> bytes:
        started = time.perf_counter()
        try:
            plugin_name, netns, env, stdin = protocol.decode_request(data)
        except protocol.ProtocolError as exc:
            log.warning("bad request: %s", exc)
            return self._fallback("bad request")
        if netns != self._netns:
            return self._fallback("other network namespace")  # the caller works in-process
        plugin = self._handlers(plugin_name)
        if plugin is None:
            return self._fallback("unknown plugin")
        out, code = dispatch.run(plugin, env, stdin)
        if self._on_request is not None:
            self._on_request(self._record(plugin_name, env, out, code, time.perf_counter() - started))
        return protocol.encode_response(code, out)

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
