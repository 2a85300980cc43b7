"""vnetd's workers block in accept(2) (one is woken per connection): stop() still ends every one
of them at once, and a caller that stalls mid-request is dropped after READ_SECONDS without
keeping anyone else waiting."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from vnetcni.daemon import protocol, server as server_mod
from vnetcni.daemon.server import Server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="vnetd serves root only")

CONF = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "vnet", "ipam": {"type": "vnet-ipam"}}).encode()
ENV = {"CNI_COMMAND": "VERSION"}


class Plugin:
    def add(self, inv, conf):
        raise AssertionError("not called")

    delete = check = add


def call(path: str, data: bytes) -> tuple[bytes, int] | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return protocol.decode_response(b"".join(chunks))


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vnetd-worker-")]


def test_stop_ends_every_worker_blocked_in_accept(tmp_path):
    plugin = Plugin()
    srv = Server(str(tmp_path), lambda name: plugin if name == "vnet" else None)
    srv.start()
    try:
        for _ in range(3):  # served one after another: each connection reaches a worker
            out, code = call(srv.socket_path, protocol.encode_request("vnet", ENV, CONF, timeout=5))
            assert code == 0 and "1.0.0" in json.loads(out)["supportedVersions"]
        assert len(workers()) == server_mod.WORKERS
    finally:
        srv.stop(drain_seconds=5)
    for t in srv._workers:
        t.join(10)
    assert not any(t.is_alive() for t in srv._workers)  # each woken by the shutdown
    assert not os.path.exists(srv.socket_path)


def test_a_caller_that_stalls_mid_request_is_dropped_after_read_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(server_mod, "READ_SECONDS", 0.3)
    plugin = Plugin()
    srv = Server(str(tmp_path), lambda name: plugin if name == "vnet" else None)
    srv.start()
    try:
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled.connect(srv.socket_path)
        stalled.sendall(b"VNET2\nplugin=vnet\n")  # never finished, never shut down
        out, code = call(srv.socket_path, protocol.encode_request("vnet", ENV, CONF, timeout=5))
        assert code == 0  # another worker serves meanwhile
        stalled.settimeout(10)
        assert stalled.recv(100) == b""  # vnetd hung up on it (READ_SECONDS), not at stop
        stalled.close()
    finally:
        srv.stop(drain_seconds=5)
