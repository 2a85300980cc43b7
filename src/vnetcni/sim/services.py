"""What runs on a simulated node besides the kernel: the CNI binaries, the node's metadata
service (inside the node's namespace, so only that node sees its answer) and, optionally, vnetd."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time

from ..cni.errors import CNIError
from ..cni.exec import find_plugin
from ..daemon.client import listening
from ..dataplane import netns as nsutil
from ..ipam.metadata import MetadataError
from ..ipam.sources import HttpMetadataSource
from ..plugins import install
from . import processes
from .errors import SimError


def tool(name: str) -> str | None:
    """One of our console scripts: next to this interpreter (the venv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which(name)


def _reference_plugin(name: str) -> str:
    try:
        return find_plugin(name, install.REFERENCE_PLUGIN_DIRS)
    except CNIError:
        raise SimError(f"the reference CNI plugin {name!r} is not installed "
                       "(Debian package containernetworking-plugins)") from None


def install_cni_binaries(bin_dir: str) -> None:
    """vnet and vnet-ipam exactly as `vnetctl install` puts them on a node (the compiled front
    doors), plus the reference portmap."""
    os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    try:
        install.install(bin_dir)
    except (OSError, RuntimeError) as exc:
        raise SimError(f"installing the CNI binaries into {bin_dir} failed: {exc}") from None
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


def fetch_metadata(netns: str, url: str, timeout: float) -> bytes:
    """The metadata service's answer at `url` as seen from inside the node's namespace (the
    socket is made there, as a plugin on that node makes it); MetadataError unless HTTP 200."""
    source = HttpMetadataSource(url, timeout=timeout)
    with nsutil.entered(nsutil.netns_path(netns)):
        return source.fetch()


def wait_metadata(netns: str, url: str, pid: int, expect: bytes, log_path: str,
                  deadline_s: float = 20.0) -> None:
    """Until the node's metadata service answers with this node's interfaces (or fails)."""
    deadline = time.monotonic() + deadline_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not processes.alive(pid):
            raise SimError(f"the metadata service of {netns} exited at start: {_tail(log_path)}")
        try:
            body = fetch_metadata(netns, url, timeout=1.0)
            if expect in body:
                return
            last = f"HTTP 200: {body[:200]!r}"
        except (MetadataError, OSError) as exc:
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


def start_vnetd(netns: str, state_dir: str, log_path: str, extra: list[str] | None = None) -> int:
    """vnetd serving this node's state directory, inside the node's namespace; its pid."""
    argv = [tool("vnetd") or "vnetd", "--state-dir", state_dir, *(extra or [])]
    return processes.spawn_in_netns(netns, argv, log_path)


def wait_vnetd(pid: int, socket_path: str, log_path: str, deadline_s: float = 20.0) -> None:
    """Until vnetd accepts connections on its socket (a file alone may be a stale one)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not processes.alive(pid):
            raise SimError(f"vnetd exited at start: {_tail(log_path)}")
        if listening(socket_path):
            return
        time.sleep(0.05)
    raise SimError(f"vnetd did not open {socket_path} within {deadline_s:.0f} s; log: {_tail(log_path)}")
