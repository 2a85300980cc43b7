"""`vnetctl trace` and `vnetctl capture` on the simulated VNet (`vnetctl fabric up`, pods made by
the real vnet plugin through `vnetctl pod add`): every hop of a flow between two nodes, and the
last hop before a drop rule on the destination node."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import require_tool

VNETCTL = os.path.join(os.path.dirname(sys.executable), "vnetctl")
HOPS = [("node1", "pod veth"), ("node1", "bridge"), ("node1", "uplink"), (None, "fabric port"),
        (None, "fabric port"), ("node2", "uplink"), ("node2", "bridge"), ("node2", "pod veth")]
_ADDED = re.compile(r"on (\S+): (\S+) \(MAC \S+, host interface (\S+), netns (\S+)\)")


class Sim:
    def __init__(self, root: str) -> None:
        # Named vnt<pid>…: the test harness's sweep knows these belong to this live session.
        self.name = f"{os.getpid()}tr"
        self.env = dict(os.environ, VNET_SIM_PREFIX="vnt", VNET_SIM_ROOT=root)
        self.pods: dict[str, dict] = {}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([VNETCTL, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout)

    def add_pod(self, node: str, name: str) -> dict:
        result = self.cli("pod", "add", node, name, "--fabric", self.name)
        assert result.returncode == 0, result.stderr + result.stdout
        m = _ADDED.search(result.stdout)
        assert m, result.stdout
        self.pods[name] = {"node": m.group(1), "address": m.group(2), "host_if": m.group(3),
                           "netns": m.group(4)}
        return self.pods[name]

    def node_netns(self, node: str) -> str:
        with open(os.path.join(self.env["VNET_SIM_ROOT"], self.name, "fabric.json")) as f:
            return next(n["netns"] for n in json.load(f)["nodes"] if n["name"] == node)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("tcpdump", "nft"):
        require_tool(tool)
    s = Sim(str(tmp_path_factory.mktemp("sim")))
    up = s.cli("fabric", "up", "--name", s.name, "--nodes", "2", "--ips-per-node", "4",
               "--subnet", "10.242.0.0/24")
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        s.add_pod("node1", "web-a")
        s.add_pod("node2", "web-b")
        yield s
    finally:
        down = s.cli("fabric", "down", "--name", s.name)
        assert down.returncode == 0, down.stderr


def trace(sim: Sim, *args: str) -> tuple[int, dict]:
    result = sim.cli("trace", "web-a", "--fabric", sim.name, "--json", *args)
    assert result.returncode in (0, 8, 9), result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("port", [8080, None])
def test_trace_between_nodes_reports_every_hop(sim, port):
    b = sim.pods["web-b"]
    to = f"{b['address']}:{port}" if port else b["address"]
    code, report = trace(sim, "--node", "node1", "--to", to)
    # Nothing listens on web-b:8080: it is reached and answers with a reset, which is not a delivery.
    assert code == (9 if port else 0), report["verdict"]
    assert report["status"] == ("refused" if port else "delivered")
    assert [(h["node"] if h["role"] != "fabric port" else None, h["role"]) for h in report["hops"]] == HOPS
    assert report["hops"][0]["interface"] == sim.pods["web-a"]["host_if"]
    assert report["hops"][-1]["interface"] == b["host_if"]
    assert [h["interface"] for h in report["hops"][3:5]] == ["p-node1", "p-node2"]
    assert all(h["forward"] >= 1 and h["reply"] >= 1 for h in report["hops"]), report["hops"]
    assert report["complete"] == (port is None) and report["destination"]["pod"] == "default/web-b"
    if port:
        assert "nothing listens on :8080" in report["verdict"]


def test_trace_reports_the_last_hop_before_a_drop_on_the_destination_node(sim):
    b = sim.pods["web-b"]
    node2 = sim.node_netns("node2")
    rules = ("table bridge vntdrop {\n  chain forward {\n"
             "    type filter hook forward priority 0; policy accept;\n"
             f"    oifname \"{b['host_if']}\" ether type ip counter drop\n  }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", node2, "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True, timeout=30)
    try:
        code, report = trace(sim, "--to", f"{b['address']}:8080", "--timeout", "1.5")
    finally:
        subprocess.run(["ip", "netns", "exec", node2, "nft", "delete", "table", "bridge", "vntdrop"],
                       check=True, capture_output=True, timeout=30)
    assert code == 8
    assert [h["forward"] > 0 for h in report["hops"]] == [True] * 7 + [False]
    assert report["last_seen"]["node"] == "node2" and report["last_seen"]["role"] == "bridge"
    assert report["last_seen"]["direction"] == "forward"
    assert report["verdict"].startswith("lost after node2:azure0")


def test_capture_on_a_fabric_node(sim):
    a, b = sim.pods["web-a"], sim.pods["web-b"]
    proc = subprocess.Popen([VNETCTL, "capture", "web-b", "--fabric", sim.name, "--node", "node2",
                             "-f", f"icmp and host {a['address']}", "-c", "2", "-d", "60", "-o", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=sim.env)
    try:
        line = b""
        while b"listening on" not in line:
            line = proc.stderr.readline()
            assert line, "vnetctl capture ended before listening"
        subprocess.run(["ip", "netns", "exec", a["netns"], "ping", "-c", "1", "-W", "2", b["address"]],
                       capture_output=True, timeout=30)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    shown = subprocess.run(["tcpdump", "-nn", "-r", "-"], input=out, capture_output=True, timeout=30)
    lines = shown.stdout.decode().splitlines()
    assert len(lines) == 2
    assert f"{a['address']} > {b['address']}: ICMP echo request" in lines[0]
    assert f"{b['address']} > {a['address']}: ICMP echo reply" in lines[1]
    assert b"wrote 2 packets to stdout" in err


def test_capture_on_the_wrong_node_says_where_the_pod_is(sim):
    result = sim.cli("capture", "web-b", "--fabric", sim.name, "--node", "node1", "-c", "1", "-o", "-")
    assert result.returncode == 3
    assert "pod web-b runs on node node2, not on node1" in result.stderr
