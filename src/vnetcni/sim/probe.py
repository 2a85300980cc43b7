"""Measuring connectivity between pods of a fabric, strictly inside the fabric's namespaces.

TCP: a listening socket is opened inside the destination pod's namespace and a client socket
inside the source's (a socket belongs to the namespace it was created in), both by this process;
the client connects to the destination pod's VNet address and a payload makes the round trip.
Ping: iputils `ping` run inside the source namespace. Nothing is sent to any address outside the
fabric's subnet, and no namespace but ours is ever entered.
"""

from __future__ import annotations

import secrets
import socket
import threading
from dataclasses import dataclass

from ..dataplane import netns as nsutil
from . import kernel


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


def _socket_in(netns: str, family: int = socket.AF_INET) -> socket.socket:
    with nsutil.entered(nsutil.netns_path(netns)):
        return socket.socket(family, socket.SOCK_STREAM)


def tcp(src_netns: str, dst_netns: str, dst_ip: str, timeout: float = 3.0) -> Probe:
    """A TCP connection from src to a listener in dst at dst_ip (IPv4 or IPv6), with an echoed payload."""
    family = socket.AF_INET6 if ":" in dst_ip else socket.AF_INET
    try:
        server = _socket_in(dst_netns, family)
    except OSError as exc:
        return Probe(False, f"cannot enter {dst_netns}: {exc.strerror or exc}")
    client = None
    try:
        server.settimeout(timeout)
        server.bind((dst_ip, 0))
        server.listen(1)
        port = server.getsockname()[1]
        client = _socket_in(src_netns, family)
        client.settimeout(timeout)
        payload = secrets.token_bytes(16)
        client.connect((dst_ip, port))
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            client.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = conn.recv(len(payload) - len(got))
                if not chunk:
                    break
                got += chunk
            conn.sendall(got)
        echoed = b""
        while len(echoed) < len(payload):
            chunk = client.recv(len(payload) - len(echoed))
            if not chunk:
                break
            echoed += chunk
        if echoed != payload:
            return Probe(False, "payload did not come back intact")
        return Probe(True, f"tcp {port}")
    except OSError as exc:
        return Probe(False, exc.strerror or str(exc))
    finally:
        server.close()
        if client is not None:
            client.close()


def ping(src_netns: str, dst_ip: str, timeout_s: int = 2) -> Probe:
    """One ICMP echo from inside src_netns."""
    proc = kernel.exec_in(src_netns, ["ping", "-n", "-q", "-c", "1", "-W", str(timeout_s), dst_ip],
                          check=False, timeout=timeout_s + 10)
    if proc.returncode == 0:
        return Probe(True, "icmp echo")
    last = (proc.stdout.strip().splitlines() or [proc.stderr.strip() or f"exit {proc.returncode}"])[-1]
    return Probe(False, last)


class Responder:
    """A backend inside a pod's namespace: every TCP connection on `port` gets one line,
    "<name> <the peer's address>", and is closed; so a caller learns which backend answered and
    the backend which source address it saw (what a Service did to the packet)."""

    def __init__(self, netns: str, name: str, port: int) -> None:
        self.name = name
        self._sock = _socket_in(netns)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("0.0.0.0", port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"responder-{name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                try:
                    conn.settimeout(2.0)
                    conn.sendall(f"{self.name} {peer[0]}\n".encode())
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> "Responder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Answer:
    ok: bool
    backend: str = ""  # the Responder's name
    seen_source: str = ""  # the source address the backend saw
    detail: str = ""


def call(src_netns: str, ip: str, port: int, timeout: float = 3.0) -> Answer:
    """A TCP connection from inside src_netns to ip:port, answered by a Responder."""
    try:
        client = _socket_in(src_netns, socket.AF_INET6 if ":" in ip else socket.AF_INET)
    except OSError as exc:
        return Answer(False, detail=f"cannot enter {src_netns}: {exc.strerror or exc}")
    with client:
        client.settimeout(timeout)
        try:
            client.connect((ip, port))
            data = b""
            while not data.endswith(b"\n"):
                chunk = client.recv(256)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            return Answer(False, detail=exc.strerror or str(exc) or type(exc).__name__)
    parts = data.decode(errors="replace").split()
    if len(parts) != 2:
        return Answer(False, detail=f"unexpected answer {data[:80]!r}")
    return Answer(True, backend=parts[0], seen_source=parts[1], detail=f"{parts[0]} saw {parts[1]}")
