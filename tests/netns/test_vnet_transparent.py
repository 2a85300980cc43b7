"""Transparent (routed) mode on a real node namespace: no bridge, /32 host routes, a link-local
gateway pinned in every pod; traffic pod-to-pod and node-to-pod routed by the node; CHECK that
really looks at the neighbour entry and the routes; DEL without netns; GC; reconcile."""

from __future__ import annotations

import os
import subprocess
import time
import sys
from pathlib import Path

import pytest

from support.cni import links, node_nic, ns_exec, run_plugin
from support.statefiles import load_state

VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
VNETCTL = str(Path(sys.executable).with_name("vnetctl"))


def conf(version: str, state_dir: str, ipam: dict, **extra) -> dict:
    return {"cniVersion": version, "name": "vntnet", "type": "vnet", "mode": "transparent",
            "stateDir": state_dir, "ipam": ipam, **extra}


@pytest.fixture
def routed_node(node_ns):
    """A node with its primary address on a NIC and forwarding on, inside its own namespace."""
    node_nic(node_ns, "10.240.0.35/16")
    return node_ns


def add(cni_bin, node, version, cfg, cid, path):
    return run_plugin(os.path.join(cni_bin, "vnet"), "ADD", cfg, node=node, container_id=cid, netns=path,
                      cni_path=cni_bin, args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}")


@pytest.mark.parametrize("version", VERSIONS)
def test_pods_are_routed_by_the_node(cni_bin, routed_node, pod_ns, state_dir, vnet_ipam, version):
    node = routed_node
    cfg = conf(version, state_dir, vnet_ipam)
    pods = []
    for i in range(4):
        name, path = pod_ns()
        res = add(cni_bin, node, version, cfg, f"ctr{i}", path)
        assert res.ok, res
        assert res.out["cniVersion"] == version
        ip = res.out["ips"][0]
        assert ip["address"].endswith("/32") and ip["gateway"] == "169.254.1.1"
        assert ("version" in ip) == (version < "1.0.0")
        pods.append((name, path, f"ctr{i}", ip["address"].split("/")[0], res.out))

    assert not [l for l in links(node) if l not in ("lo", "eth0", "vnic") and not l.startswith("azv")]  # no bridge
    routes = ns_exec(node, "ip", "-4", "route", "show").stdout
    for name, _, _, address, out in pods:
        host_if = out["interfaces"][0]["name"]
        assert f"{address} dev {host_if} scope link" in routes, routes
        neigh = ns_exec(name, "ip", "neigh", "show", "169.254.1.1").stdout
        assert "PERMANENT" in neigh and out["interfaces"][0]["mac"] in neigh, neigh
        assert "default via 169.254.1.1 dev eth0" in ns_exec(name, "ip", "route").stdout
        assert "inet6" not in ns_exec(name, "ip", "-6", "addr", "show", "dev", "eth0").stdout  # IPv4 only

    # pod to pod on the node, node to pod, pod to node: all routed by the node
    for (src, _, _, _, _), (_, _, _, dst, _) in zip(pods, pods[1:] + pods[:1]):
        assert ns_exec(src, "ping", "-c1", "-W2", dst).returncode == 0, f"{src} -> {dst}"
    assert ns_exec(node, "ping", "-c1", "-W2", pods[0][3]).returncode == 0
    assert ns_exec(pods[0][0], "ping", "-c1", "-W2", "10.240.0.35").returncode == 0
    # the gateway is never resolved: the pod's neighbour table holds only the pinned entry
    assert "169.254.1.1" in ns_exec(pods[0][0], "ip", "neigh").stdout

    if version >= "0.4.0":
        for name, path, cid, _, out in pods:
            res = run_plugin(os.path.join(cni_bin, "vnet"), "CHECK", dict(cfg, prevResult=out), node=node,
                             container_id=cid, netns=path, cni_path=cni_bin)
            assert res.ok, res
        # CHECK looks at the kernel: the pinned gateway and the node's route
        name, path, cid, address, out = pods[0]
        ns_exec(name, "ip", "neigh", "del", "169.254.1.1", "dev", "eth0")
        res = run_plugin(os.path.join(cni_bin, "vnet"), "CHECK", dict(cfg, prevResult=out), node=node,
                         container_id=cid, netns=path, cni_path=cni_bin)
        assert res.out["code"] == 103 and "not pinned" in res.out["msg"], res
        name, path, cid, address, out = pods[1]
        ns_exec(node, "ip", "route", "del", f"{address}/32")
        res = run_plugin(os.path.join(cni_bin, "vnet"), "CHECK", dict(cfg, prevResult=out), node=node,
                         container_id=cid, netns=path, cni_path=cni_bin)
        assert res.out["code"] == 103 and f"no route to {address}" in res.out["msg"], res

    for name, path, cid, _, out in pods:
        assert run_plugin(os.path.join(cni_bin, "vnet"), "DEL", cfg, node=node, container_id=cid, netns="",
                          cni_path=cni_bin).ok
    assert not [l for l in links(node) if l.startswith("azv")]
    assert "azv" not in ns_exec(node, "ip", "-4", "route").stdout  # the routes went with the veths
    assert load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"] == {}
    assert load_state(os.path.join(state_dir, "ipam.json"))["allocations"] == {}


def test_gc_and_reconcile_in_transparent_mode(cni_bin, routed_node, namespaces, state_dir, vnet_ipam):
    node = routed_node
    cfg = conf("1.1.0", state_dir, vnet_ipam)
    paths = {}
    for cid in ("ctr-live", "ctr-gone", "ctr-unlisted"):
        name = namespaces.make("pod")
        paths[cid] = (name, f"/run/netns/{name}")
        assert add(cni_bin, node, "1.1.0", cfg, cid, paths[cid][1]).ok
    # GC (spec 1.1.0): the runtime lists ctr-live and ctr-gone only
    valid = [{"containerID": c, "ifname": "eth0"} for c in ("ctr-live", "ctr-gone")]
    res = run_plugin(os.path.join(cni_bin, "vnet"), "GC", dict(cfg, **{"cni.dev/valid-attachments": valid}),
                     node=node, cni_path=cni_bin)
    assert res.ok, res
    eps = load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"]
    assert sorted(e["containerId"] for e in eps.values()) == ["ctr-gone", "ctr-live"]
    # reconcile: ctr-gone's namespace disappears (a node reboot, a DEL that never came)
    gone = paths["ctr-gone"][0]
    subprocess.run(["ip", "netns", "del", gone], check=True)
    namespaces.created.remove(gone)
    # The kernel tears the namespace down asynchronously; its veth goes with it (the evidence).
    deadline = time.monotonic() + 30
    while len([l for l in links(node) if l.startswith("azv")]) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    out = ns_exec(node, VNETCTL, "gc", "--state-dir", state_dir)
    assert out.returncode == 0 and "1 stale, 1 kept" in out.stdout, out
    eps = load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"]
    assert [e["containerId"] for e in eps.values()] == ["ctr-live"]
    assert len([l for l in links(node) if l.startswith("azv")]) == 1
    live = eps[next(iter(eps))]
    assert f"{live['ips'][0].split('/')[0]} dev {live['hostIfName']}" in ns_exec(node, "ip", "route").stdout
    assert ns_exec(paths["ctr-live"][0], "ping", "-c1", "-W2", "10.240.0.35").returncode == 0
    assert run_plugin(os.path.join(cni_bin, "vnet"), "DEL", cfg, node=node, container_id="ctr-live", netns="",
                      cni_path=cni_bin).ok
