"""What is measured: a plugin setup on a throwaway node namespace, called as a runtime calls it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..daemon.client import listening
from ..dataplane.netns import entered
from ..node.layout import NodeLayout

REFERENCE_DIR = "/usr/lib/cni"
SUBNET_PREFIX = "10.240"


def _ns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def _del_ns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def metadata_xml(count: int) -> str:
    rows = [f'<IPAddress Address="{SUBNET_PREFIX}.0.{35}" IsPrimary="true"/>']
    rows += [f'<IPAddress Address="{SUBNET_PREFIX}.{(36 + i) // 256}.{(36 + i) % 256}" IsPrimary="false"/>'
             for i in range(count)]
    return ('<Interfaces><Interface MacAddress="000D3A51C490" IsPrimary="true">'
            f'<IPSubnet Prefix="{SUBNET_PREFIX}.0.0/16">' + "".join(rows) + "</IPSubnet></Interface></Interfaces>")


@dataclass
class Target:
    """One plugin setup on its own node namespace."""

    key: str
    label: str
    binary: str
    conf: dict
    cni_path: str
    node: str = ""
    workdir: str = ""
    daemon: subprocess.Popen | None = field(default=None, repr=False)
    use_daemon: bool = False

    def env(self, command: str, container_id: str, netns: str) -> dict:
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
                "CNI_IFNAME": "eth0", "CNI_PATH": self.cni_path,
                "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={container_id}",
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    @property
    def stdin(self) -> bytes:
        return json.dumps(self.conf).encode()

    def daemon_rss_kib(self) -> int | None:
        if self.daemon is None or self.daemon.poll() is not None:
            return None
        with open(f"/proc/{self.daemon.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


# What each mode is measured against: the reference plugin doing the same job.
REFERENCE_FOR_MODE = {"bridge": "bridge", "transparent": "ptp"}  # ptp: the reference routed veth


def reference_target(pool: int, mode: str = "bridge") -> Target | None:
    plugin = REFERENCE_FOR_MODE[mode]
    if not (os.path.exists(f"{REFERENCE_DIR}/{plugin}") and os.path.exists(f"{REFERENCE_DIR}/host-local")):
        return None
    last = 36 + pool + 10
    ipam = {"type": "host-local", "subnet": f"{SUBNET_PREFIX}.0.0/16", "gateway": f"{SUBNET_PREFIX}.0.1",
            "rangeStart": f"{SUBNET_PREFIX}.0.36", "rangeEnd": f"{SUBNET_PREFIX}.{last // 256}.{last % 256}",
            "routes": [{"dst": "0.0.0.0/0"}]}
    conf = {"cniVersion": "1.0.0", "name": "benchnet", "type": plugin, "ipMasq": False, "ipam": ipam}
    if plugin == "bridge":
        conf.update(bridge="azure0", isGateway=True)
    key = "reference" if mode == "bridge" else f"reference-{plugin}"
    return Target(key, f"reference {plugin} + host-local", f"{REFERENCE_DIR}/{plugin}", conf, REFERENCE_DIR)


def vnet_target(bin_dir: str, with_daemon: bool, mode: str = "bridge") -> Target:
    conf = {"cniVersion": "1.0.0", "name": "benchnet", "type": "vnet",
            **({"bridge": "azure0"} if mode == "bridge" else {"mode": mode}),
            "ipam": {"type": "vnet-ipam", "reuseCooldownSeconds": 0}}
    key, label = ("vnetd", "vnet + vnet-ipam, vnetd") if with_daemon else ("inproc", "vnet + vnet-ipam, no vnetd")
    if mode != "bridge":
        key, label = f"{key}-{mode}", f"vnet {mode} + vnet-ipam, {'vnetd' if with_daemon else 'no vnetd'}"
    return Target(key, label, os.path.join(bin_dir, "vnet"), conf, f"{bin_dir}:{REFERENCE_DIR}",
                  use_daemon=with_daemon)


# State lives where a node keeps it: /var/run is a tmpfs on every Kubernetes node (this machine,
# without systemd, has none there), so both the reference host-local and vnet keep their state on
# a tmpfs here. vnet's writes keep their fsyncs and directory fsyncs either way.
STATE_ROOT = "/dev/shm"


@contextlib.contextmanager
def prepared(target: Target, pool: int, tag: str):
    """The node namespace (+ state, metadata file, vnetd when asked); removed afterwards."""
    target.node = f"vbench{os.getpid()}{tag}"
    root = STATE_ROOT if os.path.isdir(STATE_ROOT) else None
    target.workdir = tempfile.mkdtemp(prefix=f"vbench-{tag}-", dir=root)
    _ns(target.node)
    try:
        if target.key == "reference":
            target.conf["ipam"]["dataDir"] = os.path.join(target.workdir, "host-local")
        else:
            md = Path(target.workdir) / "interfaces.xml"
            md.write_text(metadata_xml(pool))
            target.conf["stateDir"] = os.path.join(target.workdir, "state")
            target.conf["ipam"]["metadataFile"] = str(md)
            os.makedirs(target.conf["stateDir"])
            if target.use_daemon:
                _start_vnetd(target)
        yield target
    finally:
        if target.daemon is not None:
            target.daemon.send_signal(signal.SIGTERM)
            try:
                target.daemon.wait(20)
            except subprocess.TimeoutExpired:
                target.daemon.kill()
                target.daemon.wait()
            target.daemon = None
        _del_ns(target.node)
        shutil.rmtree(target.workdir, ignore_errors=True)


def _start_vnetd(target: Target) -> None:
    vnetd = str(Path(sys.executable).with_name("vnetd"))
    sock = NodeLayout.for_plugin("vnet", target.conf).socket
    with entered(f"/run/netns/{target.node}"):
        target.daemon = subprocess.Popen([vnetd, "--state-dir", target.conf["stateDir"],
                                          "--log-file", os.path.join(target.workdir, "vnetd.log")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not listening(sock):
        if target.daemon.poll() is not None:
            raise RuntimeError("vnetd exited at start")
        if time.monotonic() > deadline:
            raise RuntimeError("vnetd did not start listening")
        time.sleep(0.02)
