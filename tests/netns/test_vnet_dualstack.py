"""Dual-stack on a real node namespace, in both modes: every pod gets an IPv4 and an IPv6 address
from vnet-ipam (the metadata lists both subnets), talks both families to its neighbours and to the
node, and CHECK and DEL handle both."""

from __future__ import annotations

import os
import subprocess

import pytest

from support.cni import node_nic, ns_exec, run_plugin
from vnetcni.ipam.metadata import render_node
from support.statefiles import load_state

V4 = [f"10.240.0.{i}" for i in range(36, 66)]
V6 = [f"fd00:10:240::{i:x}" for i in range(36, 66)]


@pytest.fixture(params=["bridge", "transparent"])
def dual_node(request, node_ns, tmp_path, state_dir):
    """A transparent node has its primary addresses on its NIC; a bridge node without an uplink
    (as here) has the subnets on its bridge, whose gateway addresses are then the node's."""
    addresses = ("10.240.0.35/16", "fd00:10:240::23/64") if request.param == "transparent" else ()
    node_nic(node_ns, *addresses, forward=("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"))
    md = tmp_path / "interfaces.xml"
    md.write_bytes(render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", V4,
                               ipv6=("fd00:10:240::/64", "fd00:10:240::23", V6)))
    ipam = {"type": "vnet-ipam", "metadataFile": str(md), "stateDir": state_dir, "reuseCooldownSeconds": 0}
    return node_ns, ipam, request.param


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_dual_stack_pods_talk_both_families(cni_bin, dual_node, pod_ns, state_dir, version):
    node, ipam, mode = dual_node
    conf = {"cniVersion": version, "name": "vntnet", "type": "vnet", "stateDir": state_dir, "ipam": ipam,
            **({"mode": "transparent"} if mode == "transparent" else {"bridge": "vntbr0"})}
    vnet = os.path.join(cni_bin, "vnet")
    pods = []
    for i in range(3):
        name, path = pod_ns()
        res = run_plugin(vnet, "ADD", conf, node=node, container_id=f"ctr{i}", netns=path, cni_path=cni_bin)
        assert res.ok, res
        ips = res.out["ips"]
        assert [ip["address"].count(":") > 0 for ip in ips] == [False, True]
        if version < "1.0.0":
            assert [ip["version"] for ip in ips] == ["4", "6"]
        pods.append((name, path, f"ctr{i}", ips[0]["address"].split("/")[0], ips[1]["address"].split("/")[0],
                     res.out))
    want_gw6 = "fe80::1" if mode == "transparent" else "fd00:10:240::1"
    assert pods[0][5]["ips"][1]["gateway"] == want_gw6
    assert f"default via {want_gw6} dev eth0" in ns_exec(pods[0][0], "ip", "-6", "route").stdout

    for (src, *_), (_, _, _, dst4, dst6, _) in zip(pods, pods[1:] + pods[:1]):
        assert ns_exec(src, "ping", "-c1", "-W2", dst6).returncode == 0, f"{src} -> {dst6}"
        assert ns_exec(src, "ping", "-c1", "-W2", dst4).returncode == 0, f"{src} -> {dst4}"
    assert ns_exec(node, "ping", "-c1", "-W2", pods[0][4]).returncode == 0  # node -> pod, IPv6
    node6 = "fd00:10:240::23" if mode == "transparent" else "fd00:10:240::1"
    assert ns_exec(pods[0][0], "ping", "-c1", "-W2", node6).returncode == 0  # pod -> node, IPv6

    # A bridge port has no IPv6 address of its own (no link-local: nothing of it in the node's
    # IPv6 routing table), while the pod's end keeps its link-local; transparent mode's host end,
    # the pods' gateway, keeps its link-local.
    for name, *_, out in pods:
        host_if, = [i["name"] for i in out["interfaces"] if i["name"].startswith("azv")]
        host6 = ns_exec(node, "ip", "-6", "addr", "show", "dev", host_if).stdout
        routes6 = ns_exec(node, "ip", "-6", "route", "show", "table", "all", "dev", host_if).stdout
        assert ("inet6 fe80::" in ns_exec(name, "ip", "-6", "addr", "show", "dev", "eth0").stdout)
        if mode == "transparent":
            assert "inet6 fe80::" in host6, host6
        else:
            assert "inet6" not in host6 and "fe80::" not in routes6, (host6, routes6)

    if mode == "transparent" and version >= "0.4.0":  # CHECK looks at the node's pin of the pod's IPv6
        name, path, cid, _, six, out = pods[0]
        host_if = out["interfaces"][0]["name"]
        subprocess.run(["ip", "-n", node, "-6", "neigh", "del", six, "dev", host_if], check=True)
        res = run_plugin(vnet, "CHECK", dict(conf, prevResult=out), node=node, container_id=cid, netns=path,
                         cni_path=cni_bin)
        assert res.out["code"] == 103 and f"does not pin {six}" in res.out["msg"], res
        subprocess.run(["ip", "-n", node, "-6", "neigh", "replace", six, "lladdr", out["interfaces"][1]["mac"],
                        "dev", host_if, "nud", "permanent"], check=True)
    for name, path, cid, _, _, out in pods:
        if version >= "0.4.0":
            assert run_plugin(vnet, "CHECK", dict(conf, prevResult=out), node=node, container_id=cid,
                              netns=path, cni_path=cni_bin).ok
        assert run_plugin(vnet, "DEL", conf, node=node, container_id=cid, netns="", cni_path=cni_bin).ok
    assert "azv" not in ns_exec(node, "ip", "-6", "route").stdout
    assert load_state(os.path.join(state_dir, "ipam.json"))["allocations"] == {}
