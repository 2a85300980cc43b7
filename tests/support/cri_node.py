"""A Kubernetes node without the kubelet, for the CRI end-to-end tests: a throwaway node network
namespace, a directory standing in for the host's root (opt/cni/bin with the reference plugins,
etc/cni/net.d, var/run/vnet), a private containerd serving the CRI in that namespace with the
pause and busybox images imported, and the kubelet stand-in driving it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from support import oci
from support.containerd import PAUSE_IMAGE, Containerd
from support.kubelet import Kubelet

BUSYBOX_IMAGE = "localhost/vnt-busybox:1"
REFERENCE_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
NODE_IP = "192.168.77.10"


class CRINode:
    def __init__(self, namespaces, workdir: Path) -> None:
        self.workdir = workdir
        self.ns = namespaces.make("node")
        # the node's own address, on a veth pair inside the node (no dummy module on these machines)
        subprocess.run(["ip", "-n", self.ns, "link", "add", "vntnode0", "type", "veth", "peer", "name", "vntnode1"],
                       check=True)
        subprocess.run(["ip", "-n", self.ns, "addr", "add", f"{NODE_IP}/24", "dev", "vntnode0"], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "vntnode0", "up"], check=True)
        self.host = workdir / "host"  # the node's /opt/cni/bin, /etc/cni/net.d, /var/run/vnet live here
        self.containerd = Containerd(self.ns, self.host, workdir)
        self.cni_bin, self.cni_conf = self.containerd.cni_bin, self.containerd.cni_conf
        self.cni_bin.mkdir(parents=True)
        for plugin in REFERENCE_PLUGINS:  # what the node's containernetworking-plugins package provides
            os.symlink(f"/usr/lib/cni/{plugin}", self.cni_bin / plugin)
        self.kubelet: Kubelet | None = None

    def start(self) -> "CRINode":
        self.containerd.start()
        images = self.workdir / "images"
        images.mkdir(exist_ok=True)
        self.containerd.import_image(oci.pause_archive(images, PAUSE_IMAGE))
        self.containerd.import_image(oci.busybox_archive(images, BUSYBOX_IMAGE))
        self.kubelet = Kubelet(self.cri, "vnt-node-1", NODE_IP, self.workdir / "kubelet", self.host)
        return self

    @property
    def cri(self):
        return self.containerd.cri

    def stop(self) -> None:
        if self.kubelet is not None:
            self.kubelet.delete_all()
        self.containerd.stop()

    # --- the network configuration kubelet's runtime reads ----------------------------
    def write_conflist(self, name: str, conflist: dict) -> Path:
        path = self.cni_conf / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(json.dumps(conflist))
        os.replace(tmp, path)
        return path

    def conflist_text(self, name: str = "10-vnet.conflist") -> str:
        return (self.cni_conf / name).read_text()

    def plugin(self, name: str, command: str, conf: dict, container_id: str, netns: str = "/proc/self/ns/net",
               timeout: float = 30):
        """A plugin of the node's /opt/cni/bin executed on the node as containerd executes it
        (the node's namespaces, CNI_* environment, the network config on stdin)."""
        from support.cni import Outcome

        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
                    "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"})
        conf = dict(conf, cniVersion=conf.get("cniVersion", "1.0.0"), name=conf.get("name", "vnet"))
        proc = subprocess.run([*self.containerd.enter(), f"/opt/cni/bin/{name}"], input=json.dumps(conf).encode(),
                              env=env, capture_output=True, timeout=timeout)
        text = proc.stdout.decode().strip()
        return Outcome(proc.returncode, json.loads(text) if text else None, proc.stderr.decode())

    def clear_conflists(self) -> None:
        for p in self.cni_conf.iterdir():
            p.unlink()

    def wait_network_ready(self, ready: bool = True, timeout: float = 30) -> float:
        start = time.monotonic()
        while self.cri.network_ready() != ready:
            if time.monotonic() - start > timeout:
                cond = self.cri.conditions().get("NetworkReady")
                raise AssertionError(f"NetworkReady stayed {not ready} for {timeout:.0f}s: {cond}")
            time.sleep(0.05)
        return time.monotonic() - start

    def forget_vnet(self, bridge: str) -> None:
        """Back to a node without vnet-cni: plugins, state and bridge gone (what `vnetctl
        uninstall` does on a real node), so the next scenario starts from scratch."""
        import shutil

        for name in ("vnet", "vnet-ipam"):
            (self.cni_bin / name).unlink(missing_ok=True)
        shutil.rmtree(self.cni_bin / ".vnet-cni", ignore_errors=True)
        state = self.host / "var/run/vnet"
        for entry in state.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        subprocess.run(["ip", "-n", self.ns, "link", "del", bridge], capture_output=True)

    # --- plain pods -------------------------------------------------------------------
    def busybox_pod(self, name: str, **kw):
        spec = {"containers": [{"name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"]}]}
        return self.kubelet.run_pod(name, spec, **kw)

    def ping(self, pod, address: str) -> bool:
        r = self.kubelet.exec(pod, "main", "ping", "-c", "1", "-W", "2", address, timeout=10)
        return r.exit_code == 0

    def links(self) -> list[str]:
        out = subprocess.run(["ip", "-n", self.ns, "-o", "link", "show"], capture_output=True, text=True).stdout
        return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]

    def sandbox_netns(self) -> list[str]:
        d = self.containerd.state / "io.containerd.grpc.v1.cri" / "netns"
        return sorted(os.listdir(d)) if d.is_dir() else []


class NodeVnetd:
    """vnetd run on the node by the test (no image): in the node's network and mount namespaces,
    as a systemd unit would run it."""

    def __init__(self, node: CRINode) -> None:
        import sys

        self.node = node
        self.state_dir = node.host / "var/run/vnet"  # the node's /var/run/vnet, seen from the test
        self.log = node.workdir / "vnetd.log"
        self.vnetd = str(Path(sys.executable).with_name("vnetd"))
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.state_dir / "vnetd.sock"

    def start(self, timeout: float = 20) -> "NodeVnetd":
        from vnetcni.daemon.client import listening

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([*self.node.containerd.enter(), self.vnetd, "--state-dir", "/var/run/vnet",
                                      "--log-file", str(self.log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not listening(str(self.socket)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("vnetd did not start listening")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self.proc.stderr.close()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.kill()

    def served(self, verb: str = "ADD") -> list[dict]:
        """vnetd's request log: what it served itself (a fallback leaves no line here)."""
        if not self.log.exists():
            return []
        recs = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [r for r in recs if r.get("verb") == verb]
