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

    @property
    def is_reference(self) -> bool:
        return self.key.startswith("reference")

    def daemon_rss_kib(self, field: str = "VmRSS") -> int | None:
        """vnetd's resident set (VmRSS), or its peak (field="VmHWM"), in KiB."""
        if self.daemon is None or self.daemon.poll() is not None:
            return None
        with open(f"/proc/{self.daemon.pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
        return None

    def daemon_cpu_ms(self) -> float | None:
        """CPU time vnetd's threads have run so far, in ms (each thread's schedstat: nanoseconds,
        where /proc/<pid>/stat counts 10 ms ticks). vnetd's threads live as long as it does."""
        if self.daemon is None or self.daemon.poll() is not None:
            return None
        total = 0
        task_dir = f"/proc/{self.daemon.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that just ended
        return total / 1e6

    # --- observing a DEL's teardown (reads only) ---------------------------------------------
    def host_veths(self, container_ids) -> set[str] | None:
        """The node-side veth names of these pods; None when the plugin names them at random
        (the reference: then no veth may be left in the node namespace at all)."""
        if self.is_reference:
            return None
        from ..plugins.endpoints import host_ifname

        return {host_ifname(self.conf["name"], c, "eth0") for c in container_ids}

    def _state_paths(self) -> list[str]:
        if self.is_reference:
            return [os.path.join(self.conf["ipam"]["dataDir"], self.conf["name"])]
        layout = NodeLayout.for_plugin("vnet", self.conf)
        ipam = NodeLayout.for_plugin("vnet-ipam", self.conf)
        return [layout.state_dir, layout.endpoints_file, ipam.state_dir, ipam.ipam_file]

    def state_token(self) -> tuple:
        """Changes whenever the plugin's state is written (every write renames a new file into
        its directory: new inode, directory mtime), so an observer re-reads only then."""
        out = []
        for path in self._state_paths():
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def state_left(self, container_ids) -> str:
        """What the plugin's state still holds of these pods ("" when nothing): vnet's endpoint
        records (marked tearing down or not) and vnet-ipam's allocations; for the reference,
        host-local's reservations. A read: no lock taken, nothing written."""
        cids = set(container_ids)
        if self.is_reference:
            folder = self._state_paths()[0]
            held = 0
            for name in os.listdir(folder) if os.path.isdir(folder) else ():
                if name == "lock" or name.startswith("last_reserved_ip"):
                    continue
                try:
                    with open(os.path.join(folder, name)) as f:
                        owner = f.read().split()[:1]
                except OSError:
                    continue
                held += bool(owner and owner[0] in cids)
            return f"{held} addresses still reserved by host-local" if held else ""
        from ..ipam.store import IpamStore
        from ..plugins.endpoints import EndpointStore

        records = [r for r in EndpointStore(NodeLayout.for_plugin("vnet", self.conf).state_dir).all().values()
                   if r.container_id in cids]
        allocated = [a for a in IpamStore(NodeLayout.for_plugin("vnet-ipam", self.conf).state_dir).read()
                     .allocations.values() if a.container_id in cids]
        parts = []
        if records:
            marked = sum(bool(r.tearing_down) for r in records)
            parts.append(f"{len(records)} endpoint records ({marked} marked tearing down)")
        if allocated:
            parts.append(f"{len(allocated)} addresses still allocated")
        return ", ".join(parts)


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


def vnet_target(bin_dir: str, with_daemon: bool, mode: str = "bridge", key: str = "", label: str = "") -> Target:
    conf = {"cniVersion": "1.0.0", "name": "benchnet", "type": "vnet",
            **({"bridge": "azure0"} if mode == "bridge" else {"mode": mode}),
            "ipam": {"type": "vnet-ipam", "reuseCooldownSeconds": 0}}
    default = ("vnetd", "vnet + vnet-ipam, vnetd") if with_daemon else ("inproc", "vnet + vnet-ipam, no vnetd")
    if mode != "bridge":
        default = f"{default[0]}-{mode}", f"vnet {mode} + vnet-ipam, {'vnetd' if with_daemon else 'no vnetd'}"
    key, label = key or default[0], label or default[1]
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
        if target.is_reference:  # host-local's state on the tmpfs too, never the machine's default
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
