"""The Python front door's side of vnetd: forward a call if a daemon is listening, else say so.

Like the C front door: CNI_NETNS is opened here (the runtime's mount namespace) and its
descriptor passed over the socket; every wait (connect, send, answer) shares one deadline, the
configuration's vnetdTimeoutSeconds (NodeLayout), which is also sent to vnetd. Nothing reached
vnetd (no socket, refused, out of time connecting): None, and the caller works in-process. The
request was sent and vnetd did not answer in time, or closed early: CNI error 11 naming vnetd and
its socket (the verb may be half done there; every verb is idempotent for one attachment, so the
runtime's retry is safe).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Mapping

from . import protocol


def listening(path: str, timeout: float = 1.0) -> bool:
    """True if a vnetd accepts connections on the socket at path (a stale file does not)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


class _OutOfTime(Exception):
    pass


def try_daemon(plugin: str, env: Mapping[str, str], stdin: bytes) -> tuple[bytes, int] | None:
    """(stdout, exit code) from vnetd, or None when no daemon serves this node (or the request
    never reached it), in which case the caller does the work in-process."""
    from ..cni.invocation import MAX_STDIN_BYTES
    from ..node.layout import LayoutError, NodeLayout

    if len(stdin) > MAX_STDIN_BYTES:
        return None  # the in-process path answers with the decode error the runtime should see
    try:
        config = json.loads(stdin)
        layout = NodeLayout.for_plugin(plugin, config)
    except (ValueError, UnicodeDecodeError, RecursionError, LayoutError):
        return None  # malformed input or a bad stateDir: the in-process path reports it
    path = layout.socket
    if not os.path.exists(path):
        return None
    deadline = time.monotonic() + layout.vnetd_timeout
    nsfd, pod_netns = _open_pod_netns(env.get("CNI_NETNS", ""))
    try:
        try:
            request = protocol.encode_request(plugin, dict(env), stdin, timeout=layout.vnetd_timeout,
                                              pod_netns=pod_netns)
        except protocol.ProtocolError:
            return None
        return _exchange(path, request, nsfd, deadline, config, layout.vnetd_timeout)
    finally:
        if nsfd is not None:
            os.close(nsfd)


def _open_pod_netns(path: str) -> tuple[int | None, str]:
    if not path:
        return None, ""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY), protocol.POD_NETNS_FD
    except OSError as exc:
        return None, f"errno:{exc.errno}"


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _OutOfTime
    return left


def _exchange(path: str, request: bytes, nsfd: int | None, deadline: float, config: dict,
              timeout: float) -> tuple[bytes, int] | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.settimeout(_left(deadline))
            sock.connect(path)
        except (OSError, _OutOfTime):
            return None  # nothing reached vnetd (stale socket file, gone, backlog full): in-process
        chunks: list[bytes] = []
        try:
            try:
                _send(sock, request, nsfd, deadline)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # vnetd closed early (e.g. refusing an oversized request): read its answer
            while True:
                sock.settimeout(_left(deadline))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (_OutOfTime, socket.timeout):
            return _retry_later(config, f"vnetd did not answer within {timeout:g}s on {path}")
        except OSError as exc:
            if not chunks:
                return _retry_later(config, f"vnetd connection lost on {path}: {exc.strerror or exc}")
    finally:
        sock.close()
    try:
        return protocol.decode_response(b"".join(chunks))
    except protocol.ProtocolError:
        return _retry_later(config, f"vnetd closed the connection before answering on {path}")


def _send(sock: socket.socket, data: bytes, nsfd: int | None, deadline: float) -> None:
    view = memoryview(data)
    if nsfd is not None:  # the descriptor rides with the first bytes
        sock.settimeout(_left(deadline))
        sent = socket.send_fds(sock, [view[:65536]], [nsfd])
        view = view[sent:]
    while view:
        sock.settimeout(_left(deadline))
        view = view[sock.send(view):]


def _retry_later(config: dict, msg: str) -> tuple[bytes, int]:
    """The daemon took the request and did not answer: the runtime must retry (code 11)."""
    from ..cni.errors import CNIError, TRY_AGAIN_LATER

    version = config.get("cniVersion")
    if not isinstance(version, str):
        version = "1.0.0"
    err = CNIError(TRY_AGAIN_LATER, msg, "retry the operation")
    return (json.dumps(err.to_dict(version)) + "\n").encode(), 1
