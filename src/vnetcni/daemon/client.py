"""The front door's side of vnetd: forward a call if a daemon is listening, else say so (None)."""

from __future__ import annotations

import json
import os
import socket
from typing import Mapping

from . import protocol

TIMEOUT_SECONDS = 120.0


def listening(path: str) -> bool:
    """True if a vnetd accepts connections on the socket at path (a stale file does not)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def try_daemon(plugin: str, env: Mapping[str, str], stdin: bytes) -> tuple[bytes, int] | None:
    """(stdout, exit code) from vnetd, or None when no daemon serves this node (or the request
    never reached it), in which case the caller does the work in-process."""
    from ..cni.invocation import MAX_STDIN_BYTES

    if len(stdin) > MAX_STDIN_BYTES:
        return None  # the in-process path answers with the decode error the runtime should see
    try:
        config = json.loads(stdin)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # malformed input: the in-process path reports it
    if not isinstance(config, dict):
        return None
    from ..node.layout import LayoutError, NodeLayout

    try:
        path = NodeLayout.for_plugin(plugin, config).socket
    except LayoutError:
        return None  # the in-process path reports the bad stateDir
    if not os.path.exists(path):
        return None
    try:
        request = protocol.encode_request(plugin, dict(env), stdin)
    except protocol.ProtocolError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_SECONDS)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None  # stale socket file or daemon gone: in-process
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        return _retry_later(config, f"vnetd connection lost: {exc}")
    finally:
        sock.close()
    try:
        return protocol.decode_response(b"".join(chunks))
    except protocol.ProtocolError:
        return _retry_later(config, "vnetd closed the connection before answering")


def _retry_later(config: dict, msg: str) -> tuple[bytes, int]:
    """The daemon took the request and died: the verb may be half done there, so the runtime
    must retry (code 11); the retry lands on a restarted vnetd or in-process, and every verb is
    idempotent for the same container."""
    from ..cni.errors import CNIError, TRY_AGAIN_LATER

    version = config.get("cniVersion")
    if not isinstance(version, str):
        version = "1.0.0"
    err = CNIError(TRY_AGAIN_LATER, msg, "retry the operation")
    return (json.dumps(err.to_dict(version)) + "\n").encode(), 1
