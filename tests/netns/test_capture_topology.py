"""Hand-made topologies and helpers for the capture/trace tests (no tests in this module).

A "node" is a namespace with bridge azure0 (the node's address on it) and `azv…` veths into pod
namespaces, plus an endpoints.json written as the vnet plugin writes it, and a fabric.json
naming the node so the CLI runs with `--fabric PATH --node NAME` (never the shared /run/vnet-sim).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vnetcni.dataplane.netns import entered
from vnetcni.plugins.endpoints import EndpointStore, host_ifname

VNETCTL = str(Path(sys.executable).parent / "vnetctl")
NETWORK = "vnt"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class PodInfo:
    name: str
    namespace: str
    container_id: str
    netns_name: str
    netns: str
    address: str
    host_if: str
    mac: str = ""


@dataclass
class NodeInfo:
    name: str
    netns_name: str
    netns: str
    address: str
    prefixlen: int
    state_dir: str
    bridge: str = "azure0"
    uplink: str | None = None
    pods: list[PodInfo] = field(default_factory=list)

    def record(self) -> dict:
        return {"name": self.name, "netns": self.netns_name, "primary": self.address,
                "eth0": self.uplink or "eth0", "bridge": self.bridge, "stateDir": self.state_dir}


def make_node(namespaces, state_dir: str, name: str = "n1", address: str = "10.99.0.1",
              prefixlen: int = 24, bridge_address: bool = True) -> NodeInfo:
    ns = namespaces.make("node")
    ip("-n", ns, "link", "add", "azure0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
    if bridge_address:
        ip("-n", ns, "addr", "add", f"{address}/{prefixlen}", "dev", "azure0")
    ip("-n", ns, "link", "set", "azure0", "up")
    os.makedirs(state_dir, exist_ok=True)
    return NodeInfo(name, ns, f"/run/netns/{ns}", address, prefixlen, state_dir)


def add_pod(namespaces, node: NodeInfo, name: str, address: str, record: bool = True,
            pod_namespace: str = "default", container_id: str | None = None) -> PodInfo:
    """A pod as vnet makes it: veth azv… on azure0, eth0 with the address, route via the node."""
    pod_ns = namespaces.make("pod")
    cid = container_id or (os.urandom(32).hex())
    host_if = host_ifname(NETWORK, cid, "eth0")
    ip("-n", node.netns_name, "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
       "netns", pod_ns)
    ip("-n", node.netns_name, "link", "set", host_if, "master", node.bridge, "up")
    ip("-n", pod_ns, "addr", "add", f"{address}/{node.prefixlen}", "dev", "eth0")
    ip("-n", pod_ns, "link", "set", "eth0", "up")
    mac = json.loads(subprocess.run(["ip", "-n", pod_ns, "-j", "link", "show", "eth0"],
                                    capture_output=True, text=True, check=True).stdout)[0]["address"]
    pod = PodInfo(name, pod_namespace, cid, pod_ns, f"/run/netns/{pod_ns}", address, host_if, mac)
    if record:
        EndpointStore(node.state_dir).put({
            "network": NETWORK, "containerId": cid, "ifName": "eth0", "hostIfName": host_if,
            "bridge": node.bridge, "mac": mac, "hostMac": "", "ips": [f"{address}/{node.prefixlen}"],
            "gateway": node.address, "routes": [{"dst": "0.0.0.0/0", "gw": node.address}],
            "dns": {}, "netns": pod.netns, "podName": name, "podNamespace": pod_namespace,
            "mtu": 1500, "created": "2024-01-01T00:00:00Z"})
    node.pods.append(pod)
    return pod


def write_fabric(path: str, nodes: list[NodeInfo], fabric_netns: str = "", fabric_bridge: str = "",
                 ports: dict[str, str] | None = None) -> str:
    doc = {"name": "vnthand", "subnet": "10.99.0.0/24", "gateway": "10.99.0.254",
           "fabricNetns": fabric_netns, "fabricBridge": fabric_bridge,
           "nodes": [dict(n.record(), fabricPort=(ports or {}).get(n.name, "")) for n in nodes]}
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


# --- traffic ---------------------------------------------------------------------------------
def tcp_exchange(client_netns: str, client_ip: str, server_netns: str, server_ip: str,
                 port: int) -> int:
    """One TCP connection with exactly four packets: SYN, SYN-ACK, ACK, then the client's RST.
    The server waits for the RST before closing, so it never sends a FIN. Returns the client port."""
    with entered(server_netns):
        server = socket.socket()
    with entered(client_netns):
        client = socket.socket()
    try:
        server.bind((server_ip, port))
        server.listen(1)
        server.settimeout(10)
        client.bind((client_ip, 0))
        client_port = client.getsockname()[1]
        client.settimeout(10)
        client.connect((server_ip, port))
        conn, _ = server.accept()
        try:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            conn.settimeout(10)
            try:
                assert conn.recv(1) == b""
            except ConnectionResetError:
                pass
        finally:
            conn.close()
        return client_port
    finally:
        client.close()
        server.close()


def tcp_refused(client_netns: str, client_ip: str, server_ip: str, port: int) -> None:
    with entered(client_netns):
        s = socket.socket()
    try:
        s.bind((client_ip, 0))
        s.settimeout(5)
        try:
            s.connect((server_ip, port))
        except ConnectionRefusedError:
            pass
    finally:
        s.close()


def ping(netns_name: str, address: str, count: int = 1) -> None:
    subprocess.run(["ip", "netns", "exec", netns_name, "ping", "-c", str(count), "-i", "0.2",
                    "-W", "2", address], capture_output=True, timeout=30)


_LINE = re.compile(r" IP6? (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]+)\]")


def read_back(path: str) -> list[tuple[str, int, str, int, str]]:
    """The TCP packets of a pcap as tcpdump -r prints them: (src, sport, dst, dport, flags)."""
    out = subprocess.run(["tcpdump", "-nn", "-r", path], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = _LINE.search(line)
        assert m, f"unexpected packet in {path}: {line}"
        rows.append((m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)))
    return rows


# --- running the CLI -------------------------------------------------------------------------
class CliRun:
    """vnetctl as a child process, its stderr read line by line (to wait for 'listening on')."""

    def __init__(self, *args: str, stdout=subprocess.DEVNULL, env: dict | None = None) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([VNETCTL, *args], stdin=subprocess.DEVNULL, stdout=stdout,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # end marker
            self._cond.notify_all()
            self._ended = True

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                if getattr(self, "_ended", False):
                    raise AssertionError(f"vnetctl ended without {text!r}: {self.stderr}")
                left = deadline - time.monotonic()
                assert left > 0, f"vnetctl did not say {text!r} in {timeout} s: {self.stderr}"
                self._cond.wait(left)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)


def wait_records(path: str, n: int, timeout: float = 15) -> None:
    """Until the pcap at `path` holds at least n packets (tcpdump -U writes each one at once)."""
    from vnetcni.capture.pcap import count_records

    deadline = time.monotonic() + timeout
    while count_records(path) < n:
        assert time.monotonic() < deadline, f"{path} holds {count_records(path)} packets, want {n}"
        time.sleep(0.05)


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([VNETCTL, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


# --- a hand-made two-node VNet (as `vnetctl fabric up` builds it) ------------------------------
@dataclass
class HandFabric:
    path: str
    netns_name: str
    nodes: list[NodeInfo]


def make_fabric(namespaces, tmp_path, n_nodes: int = 2) -> HandFabric:
    """A fabric namespace with bridge vnet0; each node's eth0 is a veth to port p-nX on it and is
    enslaved to the node's azure0 (bridge mode: pods sit on the VNet's L2 segment)."""
    fab = namespaces.make("fab")
    ip("-n", fab, "link", "add", "vnet0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
    ip("-n", fab, "link", "set", "vnet0", "up")
    nodes, ports = [], {}
    for i in range(1, n_nodes + 1):
        node = make_node(namespaces, str(tmp_path / f"state{i}"), f"n{i}", f"10.99.0.{i}")
        node.uplink = "eth0"
        port = f"p-n{i}"
        ip("-n", fab, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
           node.netns_name)
        ip("-n", fab, "link", "set", port, "master", "vnet0", "up")
        ip("-n", node.netns_name, "link", "set", "eth0", "master", "azure0", "up")
        nodes.append(node)
        ports[node.name] = port
    path = write_fabric(str(tmp_path / "fabric.json"), nodes, fab, "vnet0", ports)
    return HandFabric(path, fab, nodes)


def drop_ipv4_forwarded_to(netns_name: str, ifname: str) -> None:
    """In the node namespace only: the bridge drops every IPv4 frame it would forward out of
    `ifname` (ARP still passes), so tcpdump sees it on the bridge but never on that port."""
    rules = ("table bridge vntdrop {\n  chain forward {\n"
             "    type filter hook forward priority 0; policy accept;\n"
             f"    oifname \"{ifname}\" ether type ip counter drop\n  }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", netns_name, "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True, timeout=30)
