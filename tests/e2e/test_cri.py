"""vnet-cni driven the way kubelet drives it: a private containerd's CRI (RunPodSandbox calls the
CNI plugins), a kubelet stand-in speaking runtime.v1 over gRPC, one node per module. The reference
bridge + host-local run through the same stand-in, as the yardstick."""

from __future__ import annotations

import ipaddress
import json
import os
import statistics
import time

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
def report(request):
    """Figures for the note, printed in the run's output."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")

    def write(line: str) -> None:
        if tr is not None:
            tr.write_line(f"[cri figures] {line}")

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
