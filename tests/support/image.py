"""The vnet-cni image for e2e tests, built by scripts/build-image.sh once per session (and cached
across sessions: the base rootfs and wheels live in /var/cache/vnet-cni, the image in the script's
private podman storage, so a session finds it in seconds).

    from support.image import vnet_image          # or the `vnet_image` fixture (conftest.py)
    img = vnet_image()                            # BuiltImage(tag, archive, storage, ...)
    img.podman("run", "--rm", "--network", "none", img.tag, "vnetd", "--help")
    build_image(tag="localhost/vnet-cni:upgrade") # a second tag (e.g. for an upgrade), ~10 s

The archive is an OCI archive that `ctr -n k8s.io images import` loads.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build-image.sh"
STORAGE = os.environ.get("VNET_IMAGE_STORAGE", "/var/lib/vnet-cni/image-storage")
CACHE = os.environ.get("VNET_IMAGE_CACHE", "/var/cache/vnet-cni")
BUILD_TIMEOUT = 900  # a cold build (mmdebstrap reaching the Debian archive) takes about a minute


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    archive: str
    archive_bytes: int
    image_bytes: int
    storage: str
    seconds: float

    @property
    def env(self) -> dict[str, str]:
        """podman's private configuration (the script's), for running this image."""
        return dict(os.environ, CONTAINERS_CONF=f"{self.storage}/containers.conf",
                    CONTAINERS_STORAGE_CONF=f"{self.storage}/storage.conf")

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc


_built: dict[str, BuiltImage] = {}
_lock = threading.Lock()


def build_image(tag: str | None = None, archive: str | None = None) -> BuiltImage:
    """Run scripts/build-image.sh (cached: seconds when the base and wheels are cached)."""
    cmd = ["bash", str(SCRIPT), "--storage", STORAGE, "--cache-dir", CACHE]
    if tag:
        cmd += ["--tag", tag]
    if archive:
        cmd += ["--archive", archive]
    # its own process group: on the deadline the whole build (mmdebstrap, pip, podman) is stopped
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise AssertionError(f"scripts/build-image.sh took more than {BUILD_TIMEOUT} s") from None
    proc = subprocess.CompletedProcess(cmd, child.returncode, out, err)
    if proc.returncode != 0:
        raise AssertionError(f"scripts/build-image.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    line = proc.stdout.strip().splitlines()[-1]
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    return BuiltImage(tag=fields["tag"], archive=fields["archive"], archive_bytes=int(fields["archive_bytes"]),
                      image_bytes=int(fields["image_bytes"]), storage=STORAGE, seconds=float(fields["seconds"]))


def vnet_image(tag: str | None = None) -> BuiltImage:
    """The image built from this checkout, once per session (per tag)."""
    key = tag or ""
    with _lock:
        if key not in _built:
            _built[key] = build_image(tag)
        return _built[key]
