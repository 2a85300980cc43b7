"""vnet-cni driven the way kubelet drives it: a private containerd's CRI (RunPodSandbox calls the
CNI plugins), a kubelet stand-in speaking runtime.v1 over gRPC, one node per module. The reference
bridge + host-local run through the same stand-in, as the yardstick."""

from __future__ import annotations

import ipaddress
import threading
import json
import os
import statistics
import time
from pathlib import Path

import pytest

from conftest import Namespaces, require_tool
from support.cri_node import CRINode


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    for tool in ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "gcc", "busybox", "nsenter"):
        require_tool(tool)
    namespaces = Namespaces()
    n = None
    try:
        n = CRINode(namespaces, tmp_path_factory.mktemp("crinode"))
        n.start()
        yield n
    finally:
        if n is not None:
            n.stop()
        namespaces.cleanup()


@pytest.fixture
def report(capsys):
    """Figures for the note, printed in the run's output (not captured)."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\n[cri figures] {line}", flush=True)

    return write


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, (time.perf_counter() - start) * 1000


def ms_summary(samples: list[float]) -> str:
    s = sorted(samples)
    return f"median {statistics.median(s):.0f} ms, min {s[0]:.0f}, max {s[-1]:.0f} (n={len(s)})"


def test_reference_bridge_host_local_through_cri(node, report):
    """The yardstick and the fixture's own proof: NetworkReady follows the conflist, pods get
    host-local addresses through RunPodSandbox, reach each other and the gateway, and Stop + Remove
    leaves no veth and no allocation."""
    assert node.cri.version().runtime_api_version == "v1"
    assert not node.cri.network_ready()
    data_dir = node.workdir / "host-local"
    node.write_conflist("10-ref.conflist", {"cniVersion": "1.0.0", "name": "vntref", "plugins": [
        {"type": "bridge", "bridge": "vntref0", "isGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]], "dataDir": str(data_dir)}}]})
    try:
        node.wait_network_ready(True)
        pods, latencies = [], []
        for i in range(4):
            pod, ms = timed(node.busybox_pod, f"ref-{i}")
            pods.append(pod)
            latencies.append(ms)
        ips = [p.ip for p in pods]
        assert len(set(ips)) == 4 and all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.99.0.0/24") for ip in ips)
        assert node.ping(pods[0], "10.99.0.1")
        assert node.ping(pods[0], pods[1].ip)
        assert node.ping(pods[3], pods[2].ip)
        sandbox_ms = []
        for i in range(6):  # RunPodSandbox alone: what the network adds to a pod start
            cfg = node.kubelet.sandbox_config(f"ref-sb-{i}", "default", f"uid-ref-{i}", {})
            sid, ms = timed(node.cri.run_sandbox, cfg)
            sandbox_ms.append(ms)
            node.cri.stop_sandbox(sid)
            node.cri.remove_sandbox(sid)
        report(f"reference bridge+host-local: pod start (sandbox + busybox container) {ms_summary(latencies)}")
        report(f"reference bridge+host-local: RunPodSandbox {ms_summary(sandbox_ms)}")
        for pod in pods:
            node.kubelet.delete_pod(pod)
        assert not [l for l in node.links() if l.startswith("veth")]
        leftover = [f for f in os.listdir(data_dir / "vntref") if f[0].isdigit()] if (data_dir / "vntref").exists() else []
        assert leftover == [], leftover
        assert node.sandbox_netns() == []
    finally:
        node.kubelet.delete_all()
        node.clear_conflists()
    node.wait_network_ready(False)


POOL = [f"10.240.0.{i}" for i in range(36, 41)]  # five secondary addresses: the node's max pods


def vnet_conflist(metadata_file) -> dict:
    return {"cniVersion": "1.0.0", "name": "vnet", "plugins": [
        {"type": "vnet", "bridge": "vntcri0", "stateDir": "/var/run/vnet",
         "ipam": {"type": "vnet-ipam", "metadataFile": str(metadata_file), "reuseCooldownSeconds": 0,
                  "stateDir": "/var/run/vnet"}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}


def node_state(state_dir) -> tuple[dict, dict]:
    eps = json.loads((state_dir / "endpoints.json").read_text())["endpoints"]
    allocs = json.loads((state_dir / "ipam.json").read_text())["allocations"]
    return eps, allocs


def test_vnet_through_vnetd_on_the_node(node, report, tmp_path):
    """vnetd run on the node by the test (no image): NetworkReady, pool addresses served by vnetd
    itself, connectivity, exhaustion, containerd's double DEL, vnetd killed and restarted with pods
    running."""
    from support.cni import metadata_xml
    from support.cri import CRIError
    from support.cri_node import NodeVnetd
    from vnetcni.plugins.install import install

    install(str(node.cni_bin))
    state = node.host / "var/run/vnet"
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", POOL))
    vnetd = NodeVnetd(node)
    assert not node.cri.network_ready()
    try:
        vnetd.start()
        node.write_conflist("10-vnet.conflist", vnet_conflist(md))
        node.wait_network_ready(True)

        pods = [node.busybox_pod(f"web-{i}") for i in range(3)]
        ips = [p.ip for p in pods]
        assert len(set(ips)) == 3 and set(ips) <= set(POOL), ips
        served = {r["container"]: r for r in vnetd.served() if r["plugin"] == "vnet"}
        assert all(served.get(p.sandbox_id, {}).get("result") == "ok" for p in pods), served  # not a fallback
        eps, allocs = node_state(state)
        assert sorted(e["ips"][0].split("/")[0] for e in eps.values()) == sorted(ips)
        assert node.ping(pods[0], "10.240.0.1")  # the gateway: the node's bridge
        assert node.ping(pods[0], ips[1]) and node.ping(pods[2], ips[0])

        sandbox_ms = []
        for i in range(6):
            cfg = node.kubelet.sandbox_config(f"vnet-sb-{i}", "default", f"uid-vnet-{i}", {})
            sid, ms = timed(node.cri.run_sandbox, cfg)
            sandbox_ms.append(ms)
            node.cri.stop_sandbox(sid)
            node.cri.remove_sandbox(sid)
        report(f"vnet via vnetd (on the node): RunPodSandbox {ms_summary(sandbox_ms)}")

        # the pool holds five: two more fit, the sixth gets the clear exhaustion error
        pods += [node.busybox_pod(f"fill-{i}") for i in range(2)]
        start = time.monotonic()
        with pytest.raises(CRIError) as err:
            node.busybox_pod("one-too-many")
        assert "no address available on this node: 5 of 5 in use" in err.value.details, err.value.details
        assert time.monotonic() - start < 30
        assert len(node.cri.sandboxes()) == 5  # the failed sandbox is gone, nothing half made
        assert len(node_state(state)[1]) == 5

        # vnetd killed with pods running: pods keep their addresses and connectivity, state survives
        vnetd.kill()
        assert node.ping(pods[0], ips[1]) and node.ping(pods[1], "10.240.0.1")
        assert len(node_state(state)[0]) == 5
        vnetd.start()
        node.kubelet.delete_pod(pods.pop())  # make room
        again = node.busybox_pod("after-restart")
        assert again.ip in POOL and node.ping(again, ips[0])
        assert any(r["container"] == again.sandbox_id and r["result"] == "ok" for r in vnetd.served())

        # Stop + Remove (containerd's two DELs) leave nothing
        for pod in pods + [again]:
            node.kubelet.delete_pod(pod)
        eps, allocs = node_state(state)
        assert eps == {} and allocs == {}, (eps, allocs)
        assert not [l for l in node.links() if l.startswith("azv")]
        assert node.sandbox_netns() == []
    finally:
        node.kubelet.delete_all()
        node.clear_conflists()
        vnetd.stop()
        node.forget_vnet("vntcri0")
    node.wait_network_ready(False)
