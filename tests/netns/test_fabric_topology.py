"""The simulated VNet without pods: namespaces and veths only between namespaces, each node's own
metadata service, fabric.json, capacity, source enforcement, and teardown after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from support import resources
from conftest import require_tool
from vnetcni.sim import enforcement, fabric, inventory, kernel, model, naming, processes, services
from vnetcni.sim.errors import SimError

VNETCTL = os.path.join(os.path.dirname(sys.executable), "vnetctl")
# vnt<pid>: the harness sweeps leftovers by that prefix, and a concurrent test session's sweep
# leaves this live session's fabric alone (a bare `vnt` fabric was swept away mid-test).
PREFIX = os.environ.get("VNET_SIM_TEST_PREFIX", resources.OWNER)


@pytest.fixture
def sim_env(monkeypatch, tmp_path):
    """Fabric objects named vnt<fabric>-… (the harness sweeps `vnt`), state under tmp_path."""
    monkeypatch.setenv("VNET_SIM_PREFIX", PREFIX)
    monkeypatch.setenv("VNET_SIM_ROOT", str(tmp_path / "sim"))
    return f"f{uuid.uuid4().hex[:6]}"


@pytest.fixture
def small_fabric(sim_env):
    require_tool("nft")
    rec = fabric.up(fabric.FabricOptions(name=sim_env, nodes=2, ips_per_node=4, subnet="10.241.0.0/24",
                                         enforce_source=True))
    try:
        yield rec
    finally:
        fabric.down(rec.name)


def _owned(name: str) -> list[str]:
    return fabric.owned_namespaces(name)


def test_fabric_is_namespaces_joined_by_veths_with_nothing_in_the_root_namespace(sim_env):
    root_before = set(os.listdir("/sys/class/net"))
    rec = fabric.up(fabric.FabricOptions(name=sim_env, nodes=2, ips_per_node=4, subnet="10.241.0.0/24"))
    try:
        assert set(os.listdir("/sys/class/net")) == root_before
        assert sorted(_owned(rec.name)) == sorted([f"{PREFIX}{sim_env}-fabric", f"{PREFIX}{sim_env}-node1",
                                                   f"{PREFIX}{sim_env}-node2"])
        fabric_links = {link["ifname"]: link for link in kernel.links(rec.fabricNetns)}
        assert fabric_links["p-node1"]["master"] == "vnet0" and fabric_links["p-node2"]["master"] == "vnet0"
        assert kernel.addresses(rec.fabricNetns, "vnet0") == ["10.241.0.1/24"]
        for node in rec.nodes:
            eth0 = {link["ifname"]: link for link in kernel.links(node.netns)}["eth0"]
            assert eth0["address"] == node.mac
            assert kernel.addresses(node.netns, "eth0") == [f"{node.primary}/24"]
            assert kernel.exec_in(node.netns, ["ping", "-c1", "-W2", rec.gateway], check=False).returncode == 0
        other = rec.nodes[1].primary
        assert kernel.exec_in(rec.nodes[0].netns, ["ping", "-c1", "-W2", other], check=False).returncode == 0
    finally:
        fabric.down(rec.name)


def test_fabric_json_describes_every_node_in_the_agreed_format(small_fabric):
    with open(os.path.join(small_fabric.directory, "fabric.json")) as f:
        doc = json.load(f)
    assert doc["name"] == small_fabric.name and doc["subnet"] == "10.241.0.0/24"
    assert doc["gateway"] == "10.241.0.1" and doc["fabricBridge"] == "vnet0"
    assert doc["fabricNetns"] == small_fabric.fabricNetns
    owned = []
    for n in doc["nodes"]:
        assert n["eth0"] == "eth0" and n["bridge"] == "azure0" and n["fabricPort"] == f"p-{n['name']}"
        assert os.path.isdir(n["stateDir"]) and os.path.isfile(n["conflist"])
        assert os.access(os.path.join(n["cniBinDir"], "vnet"), os.X_OK)
        assert processes.in_netns(n["metadataPid"], n["netns"])
        with open(n["conflist"]) as f:
            conf = json.load(f)
        assert conf["plugins"][0]["ipam"]["metadataUrl"] == n["metadataUrl"]
        assert len(n["secondaries"]) == 4
        owned += [n["primary"], *n["secondaries"]]
    assert len(owned) == len(set(owned))


def test_each_node_sees_only_its_own_metadata(small_fabric):
    for node in small_fabric.nodes:
        # fetch_metadata raises MetadataError unless the service answers HTTP 200
        text = services.fetch_metadata(node.netns, naming.metadata_url(), 2.0).decode()
        assert node.mac.replace(":", "").upper() in text
        for other in small_fabric.nodes:
            if other is not node:
                assert other.mac.replace(":", "").upper() not in text
                assert all(f'"{a}"' not in text for a in other.secondaries)
        cap = inventory.capacity(node)
        assert (cap.max_pods, cap.primary) == (4, node.primary)


def test_enforce_source_drops_and_counts_an_address_the_node_does_not_own(small_fabric):
    n1, n2 = small_fabric.nodes
    gw = small_fabric.gateway
    before = enforcement.counters(small_fabric)["node1"]["spoofed_from"]
    # Its own secondary address is allowed, node2's is not.
    kernel.ip(n1.netns, "addr", "add", f"{n1.secondaries[0]}/32", "dev", "eth0")
    kernel.ip(n1.netns, "addr", "add", f"{n2.secondaries[0]}/32", "dev", "eth0")
    own = kernel.exec_in(n1.netns, ["ping", "-c1", "-W2", "-I", n1.secondaries[0], gw], check=False)
    stolen = kernel.exec_in(n1.netns, ["ping", "-c1", "-W1", "-I", n2.secondaries[0], gw], check=False)
    assert own.returncode == 0
    assert stolen.returncode != 0
    assert enforcement.counters(small_fabric)["node1"]["spoofed_from"] > before


def test_up_refuses_a_healthy_fabric_and_down_leaves_nothing(small_fabric):
    with pytest.raises(SimError, match="already up"):
        fabric.up(fabric.FabricOptions(name=small_fabric.name, nodes=1, ips_per_node=1))
    pids = [n.metadataPid for n in small_fabric.nodes]
    removed = fabric.down(small_fabric.name)
    assert removed["namespaces"] == 3
    assert _owned(small_fabric.name) == []
    assert not os.path.exists(small_fabric.directory)
    assert not any(processes.alive(p) for p in pids)
    assert fabric.down(small_fabric.name)["namespaces"] == 0  # idempotent


def _wait_for(predicate, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_after_a_killed_run_recovers_and_down_then_removes_everything(sim_env):
    env = dict(os.environ)
    proc = subprocess.Popen([VNETCTL, "fabric", "up", "--name", sim_env, "--nodes", "2", "--ips-per-node", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_for(lambda: f"{PREFIX}{sim_env}-node2" in kernel.netns_list() or proc.poll() is not None,
                  "the first run to build its second node")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = False
    if fabric.is_healthy(sim_env):  # the first run was quicker than the kill: crash one of its daemons
        os.kill(model.load(sim_env).nodes[0].metadataPid, signal.SIGKILL)
        finished = True
    orphans = [p for ns in _owned(sim_env) for p in kernel.netns_pids(ns)]
    assert _owned(sim_env)  # the killed run left namespaces behind
    _wait_for(lambda: not fabric.is_healthy(sim_env), "the fabric to count as crashed")

    # A run that finished is a fabric that is up (degraded): rebuilding it takes --replace.
    rec = fabric.up(fabric.FabricOptions(name=sim_env, nodes=2, ips_per_node=3, replace=finished))
    try:
        assert fabric.is_healthy(sim_env)
        assert not any(processes.alive(p) for p in orphans)
        assert all(inventory.capacity(n).max_pods == 3 for n in rec.nodes)
    finally:
        fabric.down(sim_env)
    assert _owned(sim_env) == [] and not os.path.exists(naming.fabric_dir(sim_env))


def test_down_without_a_record_finds_leftovers_by_name(small_fabric):
    os.unlink(model.fabric_file(small_fabric.name))  # as if the run died before writing it
    pids = [n.metadataPid for n in small_fabric.nodes]
    assert not fabric.is_healthy(small_fabric.name)
    fabric.down(small_fabric.name)
    assert _owned(small_fabric.name) == []
    assert not any(processes.alive(p) for p in pids)


def test_down_stops_a_daemon_whose_namespace_was_deleted_under_it(small_fabric):
    node = small_fabric.nodes[0]
    kernel.netns_del(node.netns)  # the daemon lives on in the now nameless namespace
    assert processes.alive(node.metadataPid)
    fabric.down(small_fabric.name)
    assert not processes.alive(node.metadataPid)


def test_bad_options_are_refused_before_anything_is_built(sim_env):
    with pytest.raises(ValueError, match="assignable"):
        fabric.up(fabric.FabricOptions(name=sim_env, nodes=3, ips_per_node=30, subnet="10.241.0.0/26"))
    with pytest.raises(ValueError, match="invalid fabric name"):
        fabric.up(fabric.FabricOptions(name="Bad_Name"))
    assert _owned(sim_env) == []


def test_cli_reports_errors_readably(sim_env):
    out = subprocess.run([VNETCTL, "fabric", "status", "--fabric", sim_env], capture_output=True, text=True)
    assert out.returncode == 3  # not found
    assert "is not up" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([VNETCTL, "fabric", "up", "--fabric", sim_env, "--subnet", "10.0.0.0/30"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "too small" in out.stderr  # bad input
