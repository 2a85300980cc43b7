"""The simulated VNet in transparent mode: the real plugins (vnet routed, vnet-ipam, portmap) on
3 nodes, the fabric doing what the SDN does (each secondary address delivered to the node that
owns it), TCP across nodes, node-local traffic kept off the fabric, trace hop by hop, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from conftest import require_tool
from support import resources
from support.vnetd import wait_for_teardowns
from vnetcni.sim import enforcement, fabric, kernel, pods, probe

VNETCTL = os.path.join(os.path.dirname(sys.executable), "vnetctl")
PREFIX = os.environ.get("VNET_SIM_TEST_PREFIX", resources.OWNER)
NODES, IPS, PODS = 3, 4, 2


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    require_tool("nft")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VNET_SIM_PREFIX", PREFIX)
        mp.setenv("VNET_SIM_ROOT", str(tmp_path_factory.mktemp("sim")))
        name = f"t{uuid.uuid4().hex[:6]}"
        rec = fabric.up(fabric.FabricOptions(name=name, nodes=NODES, ips_per_node=IPS, subnet="10.243.0.0/24",
                                             mode="transparent", enforce_source=True))
        try:
            made = [pods.add_pod(rec, n.name, f"web-{n.name}-{i}") for n in rec.nodes for i in range(PODS)]
            yield rec, made, dict(os.environ)
        finally:
            fabric.down(name)


def test_pods_are_routed_with_their_nodes_addresses_and_no_bridge(routed):
    rec, made, _ = routed
    assert rec.mode == "transparent" and all(n.bridge == "" for n in rec.nodes)
    for p in made:
        node = rec.node(p.node)
        assert p.address in node.secondaries
        assert kernel.addresses(p.netns, "eth0") == [f"{p.address}/32"]
        assert p.result["ips"][0]["gateway"] == "169.254.1.1"
        assert not [l for l in kernel.links(node.netns) if l.get("linkinfo", {}).get("info_kind") == "bridge"]
        assert f"{p.address} dev {p.host_ifname} scope link" in kernel.ip(node.netns, "route").stdout
    # the SDN's part: every secondary routed to its node's primary
    fab_routes = kernel.ip(rec.fabricNetns, "route").stdout
    for n in rec.nodes:
        for a in n.secondaries:
            assert f"{a} via {n.primary} dev {rec.fabricBridge}" in fab_routes


def test_tcp_and_ping_across_nodes_and_to_the_gateway(routed):
    rec, made, _ = routed
    failures = []
    for s in made:
        for d in made:
            if s.node != d.node:
                t = probe.tcp(s.netns, d.netns, d.address)
                if not t.ok:
                    failures.append(f"{s.name} -> {d.name}: {t.detail}")
        pg = probe.ping(s.netns, rec.gateway)
        if not pg.ok:
            failures.append(f"{s.name} -> gateway: {pg.detail}")
    assert failures == []
    # nodes reach pods of other nodes too (node-to-pod across the VNet)
    other = next(p for p in made if p.node == "node3")
    assert kernel.exec_in(rec.node("node1").netns, ["ping", "-c1", "-W2", other.address], check=False).returncode == 0
    # no packet was dropped for a spoofed source: pods send from their node's own addresses
    assert all(c["spoofed_from"] == 0 for c in enforcement.counters(rec).values())


def test_the_fabric_answers_for_secondaries_and_nodes_for_their_primaries(routed):
    rec, made, _ = routed
    node1, node2 = rec.node("node1"), rec.node("node2")
    pod2 = next(p for p in made if p.node == "node2")
    fabric_mac = next(l["address"] for l in kernel.links(rec.fabricNetns) if l["ifname"] == rec.fabricBridge)
    kernel.ip(node1.netns, "neigh", "flush", "dev", "eth0", check=False)
    for address in (pod2.address, node2.primary):
        assert kernel.exec_in(node1.netns, ["ping", "-c1", "-W2", address], check=False).returncode == 0
    neigh = kernel.ip(node1.netns, "neigh", "show", "dev", "eth0").stdout
    assert f"{pod2.address} lladdr {fabric_mac}" in neigh, neigh  # the SDN, for a secondary
    assert f"{node2.primary} lladdr {node2.mac}" in neigh, neigh  # the node itself, for its primary


def test_node_local_traffic_never_crosses_the_fabric(routed):
    rec, made, _ = routed
    before = enforcement.counters(rec)
    for node in rec.nodes:
        a, b = [p for p in made if p.node == node.name][:2]
        for s, d in ((a, b), (b, a)):
            assert probe.tcp(s.netns, d.netns, d.address).ok
            assert probe.ping(s.netns, d.address).ok
        assert kernel.exec_in(node.netns, ["ping", "-c1", "-W2", a.address], check=False).returncode == 0
    assert enforcement.counters(rec) == before
    # the counters do see traffic that has to cross: the check above can fail
    s = next(p for p in made if p.node == "node1")
    d = next(p for p in made if p.node == "node3")
    assert probe.tcp(s.netns, d.netns, d.address).ok
    crossed = enforcement.counters(rec)
    assert crossed["node1"]["ipv4_from"] > before["node1"]["ipv4_from"]
    assert crossed["node3"]["ipv4_to"] > before["node3"]["ipv4_to"]


def test_trace_follows_a_routed_flow_across_nodes(routed):
    rec, made, env = routed
    s = next(p for p in made if p.node == "node1")
    d = next(p for p in made if p.node == "node2")
    out = subprocess.run([VNETCTL, "trace", s.name, "--fabric", rec.name, "--to", d.address, "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [(h["node"], h["role"]) for h in report["hops"]] == [
        ("node1", "pod veth"), ("node1", "uplink"), (rec.name, "fabric port"), (rec.name, "fabric port"),
        ("node2", "uplink"), ("node2", "pod veth")]
    assert report["hops"][0]["interface"] == s.host_ifname and report["hops"][-1]["interface"] == d.host_ifname
    assert report["complete"] and all(h["forward"] and h["reply"] for h in report["hops"])


def test_check_and_delete_through_the_runtime(routed):
    rec, made, _ = routed
    p = pods.add_pod(rec, "node2", "short-lived")
    rt = pods.runtime_for(rec.node("node2"))
    rt.check(p.containerId, p.netns_path, "eth0", prev_result=p.result)
    pods.delete_pod(rec, "node2", "short-lived")
    node = rec.node("node2")
    wait_for_teardowns(node.stateDir)  # vnetd answers DEL before the veth is gone; its reaper finishes
    assert p.host_ifname not in {l["ifname"] for l in kernel.links(node.netns)}
    assert p.address not in kernel.ip(node.netns, "route").stdout


def test_demo_in_transparent_mode(tmp_path):
    require_tool("nft")
    env = dict(os.environ, VNET_SIM_PREFIX=PREFIX, VNET_SIM_ROOT=str(tmp_path / "sim"), COLUMNS="160")
    name = f"d{uuid.uuid4().hex[:6]}"
    try:
        proc = subprocess.run([VNETCTL, "demo", "--name", name, "--mode", "transparent", "--pods-per-node", "2"],
                              env=env, capture_output=True, text=True, timeout=240)
    finally:
        subprocess.run([VNETCTL, "fabric", "down", "--name", name], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "transparent mode" in proc.stdout and "every check passed" in proc.stdout
    assert "0 IPv4 packets crossed the fabric" in proc.stdout
