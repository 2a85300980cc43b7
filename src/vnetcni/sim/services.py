"""What runs on a simulated node besides the kernel: the CNI binaries, the node's metadata
service (inside the node's namespace, so only that node sees its answer) and, optionally, vnetd."""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import socket
import sys
import time

from ..dataplane import netns as nsutil
from . import kernel, processes
from .errors import SimError

REFERENCE_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


def tool(name: str) -> str | None:
    """One of our console scripts: next to this interpreter (the venv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which(name)


def _reference_plugin(name: str) -> str:
    for d in REFERENCE_PLUGIN_DIRS:
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    raise SimError(f"the reference CNI plugin {name!r} is not installed "
                   "(Debian package containernetworking-plugins)")


def install_cni_binaries(bin_dir: str) -> None:
    """vnet and vnet-ipam exactly as `vnetctl install` puts them on a node (the compiled front
    doors), plus the reference portmap."""
    os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    vnetctl = tool("vnetctl")
    if vnetctl is None:
        raise SimError("vnetctl is not installed (pip install -e . provides it)")
    kernel.run([vnetctl, "install", "--cni-bin-dir", bin_dir], timeout=120)
    _link(_reference_plugin("portmap"), os.path.join(bin_dir, "portmap"))
    for name in ("vnet", "vnet-ipam", "portmap"):
        if not os.access(os.path.join(bin_dir, name), os.X_OK):
            raise SimError(f"{name} is missing from {bin_dir} after installing the CNI binaries")


def _link(target: str, path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


# --- the node's metadata service ----------------------------------------------------------
def start_metadata(netns: str, port: int, interfaces_file: str, log_path: str) -> int:
    """`vnetctl metadata serve` inside the node's namespace, on its own loopback; its pid."""
    vnetctl = tool("vnetctl")
    if vnetctl is None:
        raise SimError("vnetctl is not installed")
    argv = [vnetctl, "metadata", "serve", "--listen", f"127.0.0.1:{port}", "--interfaces", interfaces_file]
    return processes.spawn_in_netns(netns, argv, log_path)


def _get_inside(netns: str, port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """An HTTP GET to 127.0.0.1:port as seen from inside netns (the socket is made there)."""
    with nsutil.entered(f"{kernel.NETNS_DIR}/{netns}"):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_metadata(netns: str, port: int, path: str, pid: int, expect: bytes, log_path: str,
                  deadline_s: float = 20.0) -> None:
    """Until the node's metadata service answers with this node's interfaces (or fails)."""
    deadline = time.monotonic() + deadline_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not processes.alive(pid):
            raise SimError(f"the metadata service of {netns} exited at start: {_tail(log_path)}")
        try:
            status, body = _get_inside(netns, port, path, timeout=1.0)
            if status == 200 and expect in body:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise SimError(f"the metadata service of {netns} did not answer within {deadline_s:.0f} s ({last}); "
                   f"log: {_tail(log_path)}")


def _tail(path: str, limit: int = 600) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(no log)"
    return data[-limit:].decode(errors="replace").strip() or "(empty log)"


# --- vnetd ---------------------------------------------------------------------------------
def vnetd_available() -> bool:
    return tool("vnetd") is not None and importlib.util.find_spec("vnetcni.daemon.main") is not None


def start_vnetd(netns: str, state_dir: str, log_path: str) -> int:
    """vnetd serving this node's state directory, inside the node's namespace; its pid."""
    argv = [tool("vnetd") or "vnetd", "--state-dir", state_dir]
    return processes.spawn_in_netns(netns, argv, log_path)


def wait_vnetd(pid: int, socket_path: str, log_path: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not processes.alive(pid):
            raise SimError(f"vnetd exited at start: {_tail(log_path)}")
        if os.path.exists(socket_path):
            return
        time.sleep(0.05)
    raise SimError(f"vnetd did not open {socket_path} within {deadline_s:.0f} s; log: {_tail(log_path)}")
