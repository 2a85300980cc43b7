"""Asking vnetd whether it really answers: a CNI VERSION request over its socket, with a deadline.

This is what the DaemonSet's liveness and readiness probes run (`vnetctl probe`) and what vnetd
asks itself before it installs the conflist: the request goes through the same accept, decode,
dispatch and encode path as a pod's ADD, so a wedged worker pool fails it, not only a dead
process. Connecting alone would succeed against a full accept backlog."""

from __future__ import annotations

import json
import os
import socket
import time

from ..daemon import protocol


class ProbeError(RuntimeError):
    pass


def ask_version(socket_path: str, timeout: float = 2.0) -> list[str]:
    """The CNI versions vnetd reports, or ProbeError saying what failed within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    request = protocol.encode_request("vnet", {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}',
                                      timeout=timeout)
    if not os.path.exists(socket_path):
        raise ProbeError(f"no vnetd socket at {socket_path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    chunks = []
    try:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except socket.timeout:
        raise ProbeError(f"vnetd on {socket_path} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeError(f"vnetd on {socket_path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = protocol.decode_response(b"".join(chunks))
    except protocol.ProtocolError as exc:
        raise ProbeError(f"vnetd on {socket_path} sent a malformed answer: {exc}") from None
    if answer is None:
        raise ProbeError(f"vnetd on {socket_path} declined the request (another network namespace?)")
    out, code = answer
    try:
        versions = json.loads(out).get("supportedVersions") if code == 0 else None
    except (ValueError, AttributeError):
        versions = None
    if not isinstance(versions, list) or not versions:
        raise ProbeError(f"vnetd on {socket_path} answered VERSION with exit code {code}: "
                         f"{out[:200].decode(errors='replace').strip()}")
    return [str(v) for v in versions]
