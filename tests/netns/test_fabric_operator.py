"""The operator's tools on a simulated VNet (issue 13 #1, #2, #7): node commands inside a node with
no flags, `fabric status` saying why a node is degraded (by asking its daemons, not by pids),
`fabric repair` restarting what is down without touching pods, `fabric up` refusing a live fabric
unless --replace, `fabric list`, and pod commands that need no node they already know."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import require_tool
from vnetcni.sim import model, processes, services

VNETCTL = os.path.join(os.path.dirname(sys.executable), "vnetctl")


class Sim:
    def __init__(self, root: str) -> None:
        # Named vnt<pid>…: the harness's sweep knows these belong to this live session.
        self.name = f"{os.getpid()}op"
        self.env = dict(os.environ, VNET_SIM_PREFIX=os.environ.get("VNET_SIM_TEST_PREFIX", "vnt"),
                        VNET_SIM_ROOT=root)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([VNETCTL, *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    def in_node(self, node: str, *args: str) -> subprocess.CompletedProcess:
        netns = self.record().node(node).netns
        return subprocess.run(["ip", "netns", "exec", netns, VNETCTL, *args], capture_output=True, text=True,
                              env=self.env, timeout=120)

    def record(self):
        saved = {k: os.environ.get(k) for k in ("VNET_SIM_ROOT", "VNET_SIM_PREFIX")}
        os.environ.update({k: self.env[k] for k in saved})
        try:
            return model.load(self.name)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    require_tool("nft")
    s = Sim(str(tmp_path_factory.mktemp("sim")))
    up = s.cli("fabric", "up", "--fabric", s.name, "--nodes", "2", "--ips-per-node", "3",
               "--subnet", "10.243.0.0/24", "--reuse-cooldown", "0")
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        for node, pod in (("node1", "web-1"), ("node1", "web-2"), ("node2", "web-3")):
            add = s.cli("pod", "add", pod, "--node", node, "--fabric", s.name)
            assert add.returncode == 0, add.stderr
        yield s
    finally:
        down = s.cli("fabric", "down", "--fabric", s.name)
        assert down.returncode == 0, down.stderr
        assert not os.path.exists(f"/etc/netns/{s.env['VNET_SIM_PREFIX']}{s.name}-node1")


def test_node_commands_inside_a_node_need_no_flags(sim):
    rec = sim.record()
    node1 = rec.node("node1")
    status = sim.in_node("node1", "status")
    assert status.returncode == 0, status.stderr
    assert f"node:       state {node1.stateDir} (from simulated node node1 of fabric {sim.name}" in status.stdout
    assert "2 recorded" in status.stdout and "vnetd:      running" in status.stdout
    data = json.loads(sim.in_node("node1", "status", "-o", "json").stdout)
    assert data["node"]["state_dir"] == node1.stateDir and data["pool"]["in_use"] == 2
    endpoints = sim.in_node("node1", "endpoints")
    assert endpoints.returncode == 0 and f"reading state {node1.stateDir}" in endpoints.stderr
    assert len([line for line in endpoints.stdout.splitlines() if "default/web-" in line]) == 2
    node2 = json.loads(sim.in_node("node2", "endpoints", "-o", "json").stdout)
    assert [e["pod_name"] for e in node2] == ["web-3"]
    # trace from inside the node, no flags: the node's fabric is known, so every hop is watched
    require_tool("tcpdump")
    web3 = next(p for p in json.loads(sim.cli("pod", "list", "--fabric", sim.name, "-o", "json").stdout)
                if p["pod"] == "default/web-3")
    ping = sim.in_node("node1", "trace", "web-1", "--to", web3["address"], "-o", "json")
    assert ping.returncode == 0, ping.stderr
    report = json.loads(ping.stdout)
    assert report["status"] == "delivered" and len(report["hops"]) == 8
    closed = sim.in_node("node1", "trace", "web-1", "--to", f"{web3['address']}:8080")
    assert closed.returncode == 9 and "nothing listens on :8080" in closed.stdout and "R RST" in closed.stdout
    # the node's own /etc/cni/net.d, as `ip netns exec` mounts it
    conf = subprocess.run(["ip", "netns", "exec", node1.netns, "ls", "/etc/cni/net.d"], capture_output=True,
                          text=True, check=True)
    assert conf.stdout.split() == ["10-vnet.conflist"]


def test_degraded_says_why_and_repair_keeps_the_pods(sim):
    rec = sim.record()
    node1 = rec.node("node1")
    pods_before = json.loads(sim.cli("pod", "list", "--fabric", sim.name, "-o", "json").stdout)
    assert len(pods_before) == 3
    os.kill(node1.vnetdPid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.alive(node1.vnetdPid) and time.monotonic() < deadline:
        time.sleep(0.05)

    status = sim.cli("fabric", "status", "--fabric", sim.name)
    assert status.returncode == 0
    assert "DEGRADED" in status.stdout and "node1: vnetd not listening on" in status.stdout
    assert "fabric repair" in status.stdout
    data = json.loads(sim.cli("fabric", "status", "--fabric", sim.name, "-o", "json").stdout)
    assert data["healthy"] is False and data["nodes"][0]["vnetd_listening"] is False
    assert data["nodes"][1]["healthy"] is True

    # `fabric up` over it refuses (it would delete the pods) and says what to do instead
    again = sim.cli("fabric", "up", "--fabric", sim.name, "--nodes", "2", "--ips-per-node", "3",
                    "--subnet", "10.243.0.0/24")
    assert again.returncode == 1 and "already up but degraded" in again.stderr
    assert "fabric repair" in again.stderr and "--replace" in again.stderr

    repair = sim.cli("fabric", "repair", "--fabric", sim.name)
    assert repair.returncode == 0, repair.stderr
    assert "restarted node1: vnetd" in repair.stdout
    assert json.loads(sim.cli("fabric", "status", "--fabric", sim.name, "-o", "json").stdout)["healthy"] is True
    assert json.loads(sim.cli("pod", "list", "--fabric", sim.name, "-o", "json").stdout) == pods_before
    nothing = sim.cli("fabric", "repair", "--fabric", sim.name, "-o", "json")
    assert json.loads(nothing.stdout)["restarted"] == []


def test_a_vnetd_restarted_by_hand_counts_as_up(sim):
    """Health is what answers: a vnetd started by hand (another pid than recorded) is up."""
    rec = sim.record()
    node2 = rec.node("node2")
    os.kill(node2.vnetdPid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while processes.alive(node2.vnetdPid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(sim.cli("fabric", "status", "--fabric", sim.name, "-o", "json").stdout)["healthy"] is False
    log = os.path.join(os.path.dirname(node2.stateDir), "vnetd-by-hand.log")
    pid = services.start_vnetd(node2.netns, node2.stateDir, log)
    services.wait_vnetd(pid, os.path.join(node2.stateDir, "vnetd.sock"), log)
    data = json.loads(sim.cli("fabric", "status", "--fabric", sim.name, "-o", "json").stdout)
    assert data["healthy"] is True, data["problems"]


def test_fabric_list_and_pod_vocabulary(sim):
    listed = json.loads(sim.cli("fabric", "list", "-o", "json").stdout)
    assert [(f["name"], f["nodes"], f["pods"]) for f in listed] == [(sim.name, 2, 3)]
    plain = sim.cli("fabric", "list")
    assert plain.stdout.splitlines()[0].split()[:2] == ["FABRIC", "STATUS"]
    missing = sim.cli("pod", "list", "--fabric", sim.name, "--node", "node9")
    assert missing.returncode == 3 and "has no node 'node9'" in missing.stderr
    add_missing = sim.cli("pod", "add", "x", "--node", "node9", "--fabric", sim.name)
    assert add_missing.returncode == 3 and "has no node 'node9'" in add_missing.stderr
    wrong = sim.cli("pod", "del", "web-3", "--node", "node1", "--fabric", sim.name)
    assert wrong.returncode == 2 and "runs on node2" in wrong.stderr
    gone = sim.cli("pod", "del", "web-3", "--fabric", sim.name, "-o", "json")  # the node is known
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["node"] == "node2"
    again = sim.cli("pod", "add", "web-3", "--fabric", sim.name)  # scheduled on the emptiest node
    assert again.returncode == 0 and "on node2" in again.stdout and "scheduling" in again.stderr
