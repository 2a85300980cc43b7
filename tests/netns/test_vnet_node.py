"""The vnet plugin on a real (throwaway) node namespace: pods, traffic, CHECK, DEL, rollback."""

from __future__ import annotations

import json
import os
import time

import pytest

from support.cni import links, ns_exec, run_plugin
from support.statefiles import load_state

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
PODS = 10


def vnet_conf(version: str, state_dir: str, ipam: dict, **extra) -> dict:
    return {"cniVersion": version, "name": "vntnet", "type": "vnet", "bridge": "vntbr0",
            "stateDir": state_dir, "ipam": ipam, **extra}


@pytest.fixture
def host_local(tmp_path):
    return {"type": "host-local", "subnet": "10.240.0.0/16", "gateway": "10.240.0.1",
            "rangeStart": "10.240.0.36", "rangeEnd": "10.240.0.65", "dataDir": str(tmp_path / "hl"),
            "routes": [{"dst": "0.0.0.0/0"}]}



@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("ipam_kind", ["vnet-ipam", "host-local"])
def test_ten_pods_work_and_leave_nothing(cni_bin, node_ns, pod_ns, state_dir, vnet_ipam, host_local,
                                         version, ipam_kind):
    ipam = vnet_ipam if ipam_kind == "vnet-ipam" else host_local
    conf = vnet_conf(version, state_dir, ipam)
    vnet = os.path.join(cni_bin, "vnet")
    cni_path = f"{cni_bin}:/usr/lib/cni"
    pods = []
    for i in range(PODS):
        name, path = pod_ns()
        res = run_plugin(vnet, "ADD", conf, node=node_ns, container_id=f"ctr{i}", netns=path, cni_path=cni_path,
                         args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-{i}")
        assert res.ok, res
        assert res.out["cniVersion"] == version
        address = res.out["ips"][0]["address"].split("/")[0]
        pods.append((name, path, f"ctr{i}", address, res.out))
    addresses = [p[3] for p in pods]
    assert len(set(addresses)) == PODS and "10.240.0.35" not in addresses
    # each pod's eth0 announces its address when it comes up (arp_notify, set through netlink)
    assert all(ns_exec(p[0], "sysctl", "-n", "net.ipv4.conf.eth0.arp_notify").stdout.strip() == "1" for p in pods)
    # and, given no IPv6 address, has none of its own: no link-local, so no DAD probe, MLD report
    # or router solicitation that the bridge would flood to every other pod
    assert all("inet6" not in ns_exec(p[0], "ip", "-6", "addr", "show", "dev", "eth0").stdout for p in pods)

    # pod-to-pod and pod-to-gateway traffic, both ways round the bridge
    for (src, _, _, _, _), (_, _, _, dst, _) in zip(pods, pods[1:] + pods[:1]):
        assert ns_exec(src, "ping", "-c1", "-W2", dst).returncode == 0, f"{src} -> {dst}"
    assert ns_exec(pods[0][0], "ping", "-c1", "-W2", "10.240.0.1").returncode == 0

    if version >= "0.4.0":
        for name, path, cid, _, out in pods:
            res = run_plugin(vnet, "CHECK", dict(conf, prevResult=out), node=node_ns, container_id=cid, netns=path, cni_path=cni_path)
            assert res.ok, res

    endpoints = load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"]
    assert len(endpoints) == PODS
    host_ifs = [e["hostIfName"] for e in endpoints.values()]
    assert all(h in links(node_ns) for h in host_ifs)

    # DEL: the first half with netns + prevResult, the rest like containerd's second call
    for i, (name, path, cid, _, out) in enumerate(pods):
        if i < PODS // 2:
            assert run_plugin(vnet, "DEL", dict(conf, prevResult=out), node=node_ns, container_id=cid,
                              netns=path, cni_path=cni_path).ok
            assert run_plugin(vnet, "DEL", conf, node=node_ns, container_id=cid, netns=path, cni_path=cni_path).ok
        else:
            assert run_plugin(vnet, "DEL", conf, node=node_ns, container_id=cid, netns="", cni_path=cni_path).ok
    assert not [l for l in links(node_ns) if l.startswith("azv")]
    assert load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"] == {}
    if ipam_kind == "vnet-ipam":
        pool = load_state(os.path.join(state_dir, "ipam.json"))
        assert '"containerId": "ctr' not in json.dumps(pool), pool
    else:
        assert not [f for f in os.listdir(os.path.join(host_local["dataDir"], "vntnet")) if f.startswith("10.")]


def test_failure_after_allocation_rolls_back(cni_bin, node_ns, pod_ns, state_dir, vnet_ipam):
    """The pod already has an interface named like CNI_IFNAME: ADD fails after IPAM allocated."""
    name, path = pod_ns()
    assert ns_exec(name, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0").returncode == 0
    conf = vnet_conf("1.0.0", state_dir, vnet_ipam, mtu=1400)
    res = run_plugin(os.path.join(cni_bin, "vnet"), "ADD", conf, node=node_ns, container_id="ctr-x", netns=path,
                     cni_path=f"{cni_bin}:/usr/lib/cni")
    assert res.code == 1 and res.out["code"] == 102 and "already exists" in res.out["msg"]
    assert not [l for l in links(node_ns) if l.startswith("azv")]
    pool = load_state(os.path.join(state_dir, "ipam.json"))
    assert "ctr-x" not in json.dumps(pool)
    endpoints_file = os.path.join(state_dir, "endpoints.json")
    assert not os.path.exists(endpoints_file) or load_state(endpoints_file)["endpoints"] == {}


def test_uplink_is_enslaved_and_keeps_the_node_reachable(cni_bin, namespaces, pod_ns, state_dir, vnet_ipam):
    """The VNet node layout: the node's NIC joins the bridge, which takes over its address and routes."""
    fabric = namespaces.make("fab")
    node = namespaces.make("node")
    assert os.system(f"ip -n {fabric} link add vntup0 type veth peer name eth0 netns {node}") == 0
    os.system(f"ip -n {fabric} link set vntup0 mtu 1450 && ip -n {node} link set eth0 mtu 1450")
    os.system(f"ip -n {fabric} addr add 10.240.0.1/16 dev vntup0 && ip -n {fabric} link set vntup0 up")
    os.system(f"ip -n {node} addr add 10.240.0.35/16 dev eth0 && ip -n {node} link set eth0 up "
              f"&& ip -n {node} route add default via 10.240.0.1")
    conf = vnet_conf("1.0.0", state_dir, vnet_ipam, uplink="eth0")
    name, path = pod_ns()
    res = run_plugin(os.path.join(cni_bin, "vnet"), "ADD", conf, node=node, container_id="ctr-u", netns=path,
                     cni_path=f"{cni_bin}:/usr/lib/cni")
    assert res.ok, res
    master = ns_exec(node, "ip", "-o", "link", "show", "eth0").stdout
    assert "master vntbr0" in master
    assert "mcast_snooping 0" in ns_exec(node, "ip", "-d", "link", "show", "vntbr0").stdout
    assert "10.240.0.35/16" in ns_exec(node, "ip", "-o", "addr", "show", "vntbr0").stdout
    assert "default via 10.240.0.1 dev vntbr0" in ns_exec(node, "ip", "route").stdout
    assert "mtu 1450" in ns_exec(name, "ip", "-o", "link", "show", "eth0").stdout  # the uplink's MTU
    pod_ip = res.out["ips"][0]["address"].split("/")[0]
    assert ns_exec(fabric, "ping", "-c1", "-W2", pod_ip).returncode == 0      # the VNet reaches the pod
    assert ns_exec(name, "ping", "-c1", "-W2", "10.240.0.35").returncode == 0  # the pod reaches its node
    assert run_plugin(os.path.join(cni_bin, "vnet"), "DEL", conf, node=node, container_id="ctr-u", netns="",
                      cni_path=f"{cni_bin}:/usr/lib/cni").ok


def test_gc_prunes_endpoints_whose_netns_is_gone(cni_bin, node_ns, namespaces, state_dir, vnet_ipam):
    """After a reboot the namespaces are gone but the state is not: `vnetctl gc` reconciles."""
    import subprocess
    import sys
    from pathlib import Path

    vnetctl = str(Path(sys.executable).with_name("vnetctl"))
    conf = vnet_conf("1.0.0", state_dir, vnet_ipam)
    live = f"/run/netns/{namespaces.make('pod')}"
    gone_name = namespaces.make("pod")
    for cid, path in (("ctr-live", live), ("ctr-gone", f"/run/netns/{gone_name}")):
        assert run_plugin(os.path.join(cni_bin, "vnet"), "ADD", conf, node=node_ns, container_id=cid, netns=path,
                          cni_path=cni_bin).ok
    subprocess.run(["ip", "netns", "del", gone_name], check=True)
    namespaces.created.remove(gone_name)
    # The kernel tears the namespace down asynchronously; its veth goes with it (the evidence).
    deadline = time.monotonic() + 30
    while len([l for l in links(node_ns) if l.startswith("azv")]) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = ns_exec(node_ns, vnetctl, "status", "--state-dir", state_dir)
    assert "2 recorded, 1 stale" in status.stdout, status
    out = ns_exec(node_ns, vnetctl, "gc", "--state-dir", state_dir)
    assert out.returncode == 0 and "pruned" in out.stdout and "1 stale, 1 kept" in out.stdout, out
    eps = load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"]
    assert [e["containerId"] for e in eps.values()] == ["ctr-live"]
    pool = load_state(os.path.join(state_dir, "ipam.json"))
    assert [a["containerId"] for a in pool["allocations"].values()] == ["ctr-live"]
    assert len([l for l in links(node_ns) if l.startswith("azv")]) == 1
    assert run_plugin(os.path.join(cni_bin, "vnet"), "DEL", conf, node=node_ns, container_id="ctr-live", netns="",
                      cni_path=cni_bin).ok
