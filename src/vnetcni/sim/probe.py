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
from dataclasses import dataclass

from ..dataplane import netns as nsutil
from . import kernel


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


def _socket_in(netns: str) -> socket.socket:
    with nsutil.entered(nsutil.netns_path(netns)):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def tcp(src_netns: str, dst_netns: str, dst_ip: str, timeout: float = 3.0) -> Probe:
    """A TCP connection from src to a listener in dst at dst_ip, with an echoed payload."""
    try:
        server = _socket_in(dst_netns)
    except OSError as exc:
        return Probe(False, f"cannot enter {dst_netns}: {exc.strerror or exc}")
    client = None
    try:
        server.settimeout(timeout)
        server.bind((dst_ip, 0))
        server.listen(1)
        port = server.getsockname()[1]
        client = _socket_in(src_netns)
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
