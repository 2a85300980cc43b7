"""The simulated VNet with the real plugins (vnet + vnet-ipam, portmap): 3 nodes x 30 addresses
filled with 90 pods; addresses, cross-node TCP, node-local traffic off the fabric, capacity."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import resources
from support.vnetd import wait_for_teardowns
from conftest import require_tool
from vnetcni.cni.errors import CNIError, NO_ADDRESS_AVAILABLE
from vnetcni.sim import enforcement, fabric, inventory, kernel, naming, pods, probe

VNETCTL = os.path.join(os.path.dirname(sys.executable), "vnetctl")
# vnt<pid>: the harness sweeps leftovers by that prefix, and a concurrent test session's sweep
# leaves this live session's fabric alone (a bare `vnt` fabric was swept away mid-test).
PREFIX = os.environ.get("VNET_SIM_TEST_PREFIX", resources.OWNER)
NODES, IPS = 3, 30


class Cluster:
    def __init__(self, rec):
        self.rec = rec
        self.runtimes = {n.name: pods.runtime_for(n) for n in rec.nodes}

    def add(self, node: str, name: str) -> pods.PodRecord:
        return pods.add_pod(self.rec, node, name, runtime=self.runtimes[node])

    def delete(self, p: pods.PodRecord) -> None:
        pods.delete_pod(self.rec, p.node, p.name, p.namespace, runtime=self.runtimes[p.node])

    def pods(self, node: str | None = None) -> list[pods.PodRecord]:
        return pods.list_pods(self.rec, node)

    def pod_netns(self) -> set[str]:
        start = naming.pod_netns(self.rec.name, "0" * 12)[:-12]
        return {n for n in kernel.netns_list() if n.startswith(start)}

    def node_links(self, node: str) -> set[str]:
        return {link["ifname"] for link in kernel.links(self.rec.node(node).netns)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_tool("nft")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VNET_SIM_PREFIX", PREFIX)
        mp.setenv("VNET_SIM_ROOT", str(tmp_path_factory.mktemp("sim")))
        name = f"p{uuid.uuid4().hex[:6]}"
        # vnetd (when installed) keeps 90 pods x (ADD + 2 DELs) fast; the in-process path is
        # covered by test_plugins_in_process_without_vnetd below.
        # Reuse cooldown 0 (a node's default is 30 s): the tests below reuse a released address at once.
        rec = fabric.up(fabric.FabricOptions(name=name, nodes=NODES, ips_per_node=IPS, vnetd=True,
                                             reuse_cooldown=0))
        try:
            c = Cluster(rec)
            jobs = [(n.name, f"pod-{n.name}-{i}") for i in range(IPS) for n in rec.nodes]
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda job: c.add(*job), jobs))
            yield c
        finally:
            fabric.down(name)


def test_90_pods_get_distinct_addresses_each_from_its_own_node(cluster):
    all_pods = cluster.pods()
    assert len(all_pods) == NODES * IPS
    addresses = [p.address for p in all_pods]
    assert len(set(addresses)) == len(addresses)
    for node in cluster.rec.nodes:
        mine = cluster.pods(node.name)
        assert sorted(p.address for p in mine) == sorted(node.secondaries)
    sample = random.Random(7).sample(all_pods, 6)
    for p in sample:  # what the kernel has, not only what the runtime recorded
        assert kernel.addresses(p.netns, "eth0") == [f"{p.address}/16"]
        assert p.host_ifname in cluster.node_links(p.node)


def test_every_sampled_pair_across_nodes_talks_tcp(cluster):
    rng = random.Random(11)
    failures = []
    for src_node in cluster.rec.nodes:
        for dst_node in cluster.rec.nodes:
            if src_node is dst_node:
                continue
            for _ in range(2):
                s = rng.choice(cluster.pods(src_node.name))
                d = rng.choice(cluster.pods(dst_node.name))
                t = probe.tcp(s.netns, d.netns, d.address)
                if not t.ok:
                    failures.append(f"{s.name} -> {d.name} ({d.address}): {t.detail}")
    assert failures == []
    s = cluster.pods("node2")[0]
    assert probe.ping(s.netns, cluster.rec.gateway).ok
    assert probe.tcp(s.netns, cluster.rec.fabricNetns, cluster.rec.gateway).ok


def test_node_local_traffic_never_crosses_the_fabric(cluster):
    before = enforcement.counters(cluster.rec)
    for node in cluster.rec.nodes:
        a, b, c = cluster.pods(node.name)[:3]
        for s, d in ((a, b), (b, c), (c, a)):
            assert probe.tcp(s.netns, d.netns, d.address).ok
            assert probe.ping(s.netns, d.address).ok
    after = enforcement.counters(cluster.rec)
    assert after == before
    # The counters do see pod traffic that has to cross: the check above can fail.
    s, d = cluster.pods("node1")[0], cluster.pods("node3")[0]
    assert probe.tcp(s.netns, d.netns, d.address).ok
    crossed = enforcement.counters(cluster.rec)
    assert crossed["node1"]["ipv4_from"] > after["node1"]["ipv4_from"]
    assert crossed["node3"]["ipv4_to"] > after["node3"]["ipv4_to"]


def test_capacity_is_the_secondary_count_and_pod_31_fails_cleanly_until_one_is_deleted(cluster):
    node = cluster.rec.node("node1")
    assert inventory.capacity(node).max_pods == IPS
    netns_before = cluster.pod_netns()
    links_before = cluster.node_links("node1")
    with pytest.raises(CNIError) as err:
        cluster.add("node1", "one-too-many")
    assert err.value.code == NO_ADDRESS_AVAILABLE
    assert f"{IPS} of {IPS} in use" in err.value.msg
    assert cluster.pod_netns() == netns_before
    assert cluster.node_links("node1") == links_before
    assert inventory.pool_counts(node)["in use"] == IPS
    assert pods.get_pod(cluster.rec, "default", "one-too-many") is None

    # Through the CLI the same refusal is a readable message and exit code 1.
    cli = subprocess.run([VNETCTL, "pod", "add", "node1", "cli-too-many", "--fabric", cluster.rec.name],
                         capture_output=True, text=True, env=dict(os.environ, VNET_SIM_PREFIX=PREFIX,
                                                                  VNET_SIM_ROOT=os.path.dirname(cluster.rec.directory)))
    assert cli.returncode == 1
    assert f"no address available on this node: {IPS} of {IPS} in use" in cli.stderr
    assert "Traceback" not in cli.stderr
    assert cluster.pod_netns() == netns_before

    victim = cluster.pods("node1")[5]
    cluster.delete(victim)
    assert victim.netns not in kernel.netns_list()
    wait_for_teardowns(node.stateDir)  # vnetd answers DEL before the veth is gone; its reaper finishes
    assert victim.host_ifname not in cluster.node_links("node1")
    again = cluster.add("node1", "one-too-many")
    assert again.address == victim.address  # the only free address (reuse cooldown 0 in this fabric)


def test_status_lists_every_pod_and_node(cluster):
    env = dict(os.environ, VNET_SIM_PREFIX=PREFIX, VNET_SIM_ROOT=os.path.dirname(cluster.rec.directory))
    out = subprocess.run([VNETCTL, "fabric", "status", "--name", cluster.rec.name, "--json"],
                         capture_output=True, text=True, env=env, check=True)
    data = json.loads(out.stdout)
    assert data["healthy"] is True, data["problems"]
    assert len(data["pods"]) == NODES * IPS
    assert [(n["name"], n["pods"], n["pool"]["in_use"]) for n in data["nodes"]] == \
        [(f"node{i}", IPS, IPS) for i in range(1, NODES + 1)]


def test_deleting_every_pod_frees_every_pool_and_leaves_no_sandbox(cluster):
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(cluster.delete, cluster.pods()))
    assert cluster.pods() == []
    assert cluster.pod_netns() == set()
    for node in cluster.rec.nodes:
        wait_for_teardowns(node.stateDir)  # vnetd answers DEL before the veth is gone; its reaper finishes
        counts = inventory.pool_counts(node)
        assert (counts["in use"], counts["free"]) == (0, IPS)
        assert cluster.node_links(node.name) == {"lo", "eth0", "azure0"}


def test_plugins_in_process_without_vnetd(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_SIM_PREFIX", PREFIX)
    monkeypatch.setenv("VNET_SIM_ROOT", str(tmp_path / "sim"))
    name = f"i{uuid.uuid4().hex[:6]}"
    rec = fabric.up(fabric.FabricOptions(name=name, nodes=2, ips_per_node=2, vnetd=False, reuse_cooldown=0))
    try:
        assert all(n.vnetdPid is None for n in rec.nodes)
        c = Cluster(rec)
        a, b = c.add("node1", "a"), c.add("node1", "b")
        d = c.add("node2", "d")
        assert {a.address, b.address} == set(rec.node("node1").secondaries)
        assert probe.tcp(a.netns, d.netns, d.address).ok
        with pytest.raises(CNIError) as err:
            c.add("node1", "c")
        assert err.value.code == NO_ADDRESS_AVAILABLE and "2 of 2 in use" in err.value.msg
        for p in (a, b, d):
            c.delete(p)
        assert inventory.pool_counts(rec.node("node1"))["in use"] == 0
        assert c.pod_netns() == set()
    finally:
        fabric.down(name)
