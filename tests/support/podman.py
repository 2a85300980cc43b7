"""podman with the CNI backend, isolated: private containers.conf, storage, network dir, and run
inside a throwaway node namespace (nsenter --net keeps /sys and the cgroup mounts intact)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

APPLETS = ("sh", "httpd", "wget", "cat", "echo", "sleep", "timeout", "ip", "nc")

CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "cni"
network_config_dir = "{net_dir}"
cni_plugin_dirs = [{plugin_dirs}]
"""


class Podman:
    def __init__(self, base: Path, node: str, plugin_dirs: list[str]) -> None:
        self.base, self.node = base, node
        self.net_dir = base / "net"
        self.net_dir.mkdir(parents=True)
        conf = base / "containers.conf"
        conf.write_text(CONTAINERS_CONF.format(net_dir=self.net_dir,
                                               plugin_dirs=", ".join(f'"{d}"' for d in plugin_dirs)))
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.runroot = tempfile.mkdtemp(prefix="vntpm", dir="/run")  # podman wants <= 50 characters
        self.prefix = ["nsenter", f"--net=/run/netns/{node}", "podman", "--root", str(base / "storage"),
                       "--runroot", self.runroot]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.prefix, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def import_busybox(self, tag: str = "localhost/vnt-busybox") -> str:
        rootfs = self.base / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        shutil.copy(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        archive = self.base / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        self("import", str(archive), tag)
        return tag

    def cleanup(self) -> None:
        self("rm", "-f", "-a", "-t", "0", check=False)
        self("rmi", "-a", "-f", check=False)
        for path in (str(self.base / "storage"), self.runroot):
            subprocess.run(["umount", "-R", path], capture_output=True)
        shutil.rmtree(self.runroot, ignore_errors=True)
