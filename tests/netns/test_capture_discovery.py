"""Capturing pods of other CNIs (no records of ours): the reference `bridge` and `ptp` plugins
make the pods; discovery finds the host veth and says which method found it."""

from __future__ import annotations

import os

import pytest

from conftest import require_tool
from support.cni import run_plugin
from vnetcni.capture import discovery
from vnetcni.capture.nodes import Node

from netns.test_capture_topology import (CliRun, ping, read_back, run_cli, tcp_exchange,
                                         wait_records)

GATEWAY = "10.98.0.1"


def plugin_pod(namespaces, pod_ns, node: str, tmp_path, kind: str) -> tuple[str, str, str]:
    """(netns name, netns path, address) of a pod that the reference plugin `kind` attached."""
    require_tool(f"/usr/lib/cni/{kind}")
    name, path = pod_ns()
    conf = {"cniVersion": "1.0.0", "name": "vntref", "type": kind,
            "ipam": {"type": "host-local", "subnet": "10.98.0.0/24", "gateway": GATEWAY,
                     "dataDir": str(tmp_path / "ipam")}}
    if kind == "bridge":
        conf.update(bridge="cni0", isGateway=True)
    outcome = run_plugin(f"/usr/lib/cni/{kind}", "ADD", conf, node=node,
                         container_id=os.urandom(16).hex(), netns=path)
    assert outcome.ok, outcome.stderr or outcome.out
    return name, path, outcome.out["ips"][0]["address"].split("/")[0]


@pytest.fixture
def bridge_pod(namespaces, node_ns, pod_ns, tmp_path):
    require_tool("tcpdump")
    return plugin_pod(namespaces, pod_ns, node_ns, tmp_path, "bridge")


def fabric_for(node_ns: str, tmp_path) -> str:
    import json

    path = tmp_path / "fabric.json"
    path.write_text(json.dumps({"name": "vntref", "nodes": [
        {"name": "ref", "netns": node_ns, "stateDir": str(tmp_path / "no-state"), "bridge": "cni0"}]}))
    return str(path)


@pytest.mark.parametrize("form", ["path", "name", "address"])
def test_bridge_plugin_pod_capture_by_discovery(node_ns, bridge_pod, tmp_path, form):
    pod_name, pod_path, address = bridge_pod
    query = {"path": pod_path, "name": pod_name, "address": address}[form]
    out = str(tmp_path / "ref.pcap")
    run = CliRun("capture", query, "--fabric", fabric_for(node_ns, tmp_path), "--node", "ref",
                 "-f", "tcp port 8080", "-o", out, "-c", "100", "-d", "60")
    try:
        run.wait_for("listening on")
        client_port = tcp_exchange(f"/run/netns/{node_ns}", GATEWAY, pod_path, address, 8080)
        wait_records(out, 4)
        run.interrupt()
        assert run.wait() == 0, run.stderr
    finally:
        run.kill()
    fwd, back = (GATEWAY, client_port, address, 8080), (address, 8080, GATEWAY, client_port)
    rows = read_back(out)
    assert [r[:4] for r in rows] == [fwd, back, fwd, fwd]
    assert [r[4] for r in rows] == ["S", "S.", ".", "R."]
    assert "found by veth peer link" in run.stderr
    assert "host interface veth" in run.stderr
    assert "wrote 4 packets" in run.stderr


def test_in_pod_capture_of_a_bridge_plugin_pod(node_ns, bridge_pod, tmp_path):
    _, pod_path, address = bridge_pod
    out = str(tmp_path / "inpod.pcap")
    run = CliRun("capture", pod_path, "--fabric", fabric_for(node_ns, tmp_path), "--node", "ref",
                 "--in-pod", "-f", "icmp", "-o", out, "-c", "2", "-d", "60")
    try:
        run.wait_for("listening on")
        ping(node_ns, address)
        assert run.wait() == 0, run.stderr
    finally:
        run.kill()
    assert "wrote 2 packets" in run.stderr and f"eth0 inside pod {pod_path}" in run.stderr


def test_bridge_fdb_method_maps_neighbour_mac_to_the_port(node_ns, bridge_pod):
    pod_name, pod_path, address = bridge_pod
    ping(node_ns, address)  # the node learns the pod's MAC (neighbour) and the bridge its port
    node = Node("ref", f"/run/netns/{node_ns}", "/nonexistent")
    found = discovery.by_address(address, node)
    peer = discovery.by_peer_link(discovery.read_pod_link(pod_path, node), node)
    assert found is not None and peer is not None
    assert found.method == discovery.METHOD_FDB
    assert (found.host_if, found.bridge) == (peer.host_if, "cni0")
    assert "forwarding table" in found.detail


def test_route_method_finds_a_routed_pods_veth(namespaces, node_ns, pod_ns, tmp_path):
    require_tool("tcpdump")
    _, pod_path, address = plugin_pod(namespaces, pod_ns, node_ns, tmp_path, "ptp")
    node = Node("ref", f"/run/netns/{node_ns}", "/nonexistent")
    found = discovery.by_address(address, node)
    peer = discovery.by_peer_link(discovery.read_pod_link(pod_path, node), node)
    assert found is not None and found.method == discovery.METHOD_ROUTE
    assert found.host_if == peer.host_if and found.bridge is None


def test_a_namespace_without_a_pod_is_not_found(namespaces, node_ns, tmp_path):
    empty = namespaces.make("pod")
    result = run_cli("capture", empty, "--fabric", fabric_for(node_ns, tmp_path), "--node", "ref",
                     "-c", "1", "-o", str(tmp_path / "x.pcap"))
    assert result.returncode == 3
    assert "has no interface eth0" in result.stderr and "Traceback" not in result.stderr
