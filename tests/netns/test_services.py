"""Kubernetes Services over vnet through the simulated VNet: kube-proxy's own iptables layout
(sim/kubeproxy.py) on 3 nodes, backends that answer with who they are and which source address
they saw. Same node, across nodes, hairpin, NodePort through every node (also nodes that do not
host the endpoint), endpoints spread by `statistic`, ClientIP affinity through `recent`, the
client's address preserved for ClusterIP traffic; the node prerequisites STATUS reports.

In both dataplane modes: bridge (kube-proxy behind br_netfilter) and transparent (routed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from conftest import require_tool
from support import resources
from support.cni import metadata_xml, ns_exec, run_plugin
from vnetcni.cni.errors import CNIError
from vnetcni.sim import fabric, kernel, kubeproxy, pods, probe

MODES = ["bridge", "transparent"]
PORT, TARGET = 80, 8080
# Objects carry this session's pid (vnt<pid>...): a concurrent test session never sweeps them.
PREFIX = resources.OWNER[:10]


class Cluster:
    """node1: s1 (the endpoint of `web`), a; node2: s2, c; node3: d. Every node has pods, so every
    node has its bridge: a NodePort through node2 or node3 is one through a bridged node that does
    not host web's endpoint."""

    def __init__(self, rec, mode: str) -> None:
        self.rec, self.mode = rec, mode
        self.runtimes = {n.name: pods.runtime_for(n) for n in rec.nodes}
        self.pod = {}
        for node, name in (("node1", "s1"), ("node1", "a"), ("node2", "s2"), ("node2", "c"), ("node3", "d")):
            self.pod[name] = pods.add_pod(rec, node, name, runtime=self.runtimes[node])
        self.web = kubeproxy.add_service(rec, "web", ["s1"], PORT, TARGET, node_port=0)
        self.spread = kubeproxy.add_service(rec, "spread", ["s1", "s2"], PORT, TARGET)
        self.sticky = kubeproxy.add_service(rec, "sticky", ["s1", "s2"], PORT, TARGET, affinity="ClientIP")
        self.backends = [probe.Responder(self.pod[n].netns, n, TARGET) for n in ("s1", "s2")]

    def call(self, src: str, ip: str, port: int = PORT) -> probe.Answer:
        netns = self.rec.fabricNetns if src == "gateway" else self.pod[src].netns
        return probe.call(netns, ip, port)

    def close(self) -> None:
        for b in self.backends:
            b.close()


@pytest.fixture(scope="module", params=MODES)
def cluster(request, tmp_path_factory):
    require_tool("iptables-restore")
    require_tool("nft")
    mode = request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VNET_SIM_PREFIX", PREFIX)
        mp.setenv("VNET_SIM_ROOT", str(tmp_path_factory.mktemp("sim")))
        name = f"s{uuid.uuid4().hex[:6]}"
        opts = {"mode": mode} if mode != "bridge" else {}
        rec = fabric.up(fabric.FabricOptions(name=name, nodes=3, ips_per_node=4, vnetd=True, **opts))
        c = None
        try:
            c = Cluster(rec, mode)
            yield c
        finally:
            if c is not None:
                c.close()
            fabric.down(name)


def test_nodes_are_configured_as_kubernetes_nodes(cluster):
    for node in cluster.rec.nodes:
        values = kernel.exec_in(node.netns, ["sysctl", "-n", "net.ipv4.ip_forward",
                                             "net.bridge.bridge-nf-call-iptables"]).stdout.split()
        assert values == ["1", "1"], node.name
        saved = kernel.exec_in(node.netns, ["iptables-save", "-t", "nat"]).stdout
        assert f"-A KUBE-SERVICES -d {cluster.web.clusterIP}/32" in saved
        assert "--probability 0.50000000000" in saved and "--rcheck --seconds 10800" in saved
        assert "-j MASQUERADE --random-fully" in saved


def test_pod_ports_have_hairpin_and_the_uplink_port_does_not(cluster):
    if cluster.mode != "bridge":
        pytest.skip("no bridge in this mode")
    node = cluster.rec.node("node1")
    links = {link["ifname"]: link for link in json.loads(
        kernel.ip(node.netns, "-d", "-j", "link", "show").stdout)}
    pod_ports = [n for n in links if n.startswith("azv")]
    assert len(pod_ports) == 2
    for name in pod_ports:
        assert links[name]["linkinfo"]["info_slave_data"]["hairpin"] is True, name
    assert links["eth0"]["linkinfo"]["info_slave_data"]["hairpin"] is False
    assert links["azure0"]["linkinfo"]["info_data"]["nf_call_iptables"] == 1
    # The node's own IPv4 frames arriving on the uplink are routed through the bridge's IP stack.
    shown = kernel.exec_in(node.netns, ["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout
    assert "mirred (Ingress Redirect to device azure0)" in shown
    assert f"match {node.mac.replace(':', '')[4:]}/ffffffff at -12" in shown


def test_clusterip_on_the_same_node_keeps_the_client_address(cluster):
    answer = cluster.call("a", cluster.web.clusterIP)
    assert answer.ok, answer.detail
    assert (answer.backend, answer.seen_source) == ("s1", cluster.pod["a"].address)


def test_clusterip_across_nodes_keeps_the_client_address(cluster):
    for src in ("c", "d"):
        answer = cluster.call(src, cluster.web.clusterIP)
        assert answer.ok, f"{src}: {answer.detail}"
        assert (answer.backend, answer.seen_source) == ("s1", cluster.pod[src].address)


def test_a_node_reaches_a_service_whose_endpoint_is_elsewhere(cluster):
    node = cluster.rec.node("node2")
    answer = probe.call(node.netns, cluster.web.clusterIP, PORT)  # kube-proxy's OUTPUT jump
    assert answer.ok, answer.detail
    assert (answer.backend, answer.seen_source) == ("s1", node.primary)


def test_hairpin_a_pod_reaches_a_service_backed_by_itself(cluster):
    answer = cluster.call("s1", cluster.web.clusterIP)
    assert answer.ok, answer.detail
    # kube-proxy masquerades hairpin traffic (KUBE-SEP's -s ENDPOINT -> KUBE-MARK-MASQ): the pod
    # sees its node's address, and the reply comes back through the node.
    assert (answer.backend, answer.seen_source) == ("s1", cluster.rec.node("node1").primary)


@pytest.mark.parametrize("node", ["node1", "node2", "node3"])
def test_nodeport_answers_on_every_node(cluster, node):
    target = cluster.rec.node(node)
    for src in ("gateway", "c"):
        answer = cluster.call(src, target.primary, cluster.web.nodePort)
        assert answer.ok, f"{src} -> {node}:{cluster.web.nodePort}: {answer.detail}"
        # externalTrafficPolicy Cluster: masqueraded to the node that took the call
        assert (answer.backend, answer.seen_source) == ("s1", target.primary)


def test_endpoints_are_spread_and_client_ip_affinity_sticks(cluster):
    spread = {cluster.call("d", cluster.spread.clusterIP).backend for _ in range(24)}
    assert spread == {"s1", "s2"}  # all 24 on one backend: probability 2^-23
    for src in ("a", "c", "d"):
        seen = [cluster.call(src, cluster.sticky.clusterIP) for _ in range(10)]
        assert all(a.ok for a in seen), [a.detail for a in seen]
        assert len({a.backend for a in seen}) == 1, (src, [a.backend for a in seen])
        assert {a.seen_source for a in seen} == {cluster.pod[src].address}


def test_check_fails_when_a_pod_port_loses_hairpin(cluster):
    if cluster.mode != "bridge":
        pytest.skip("no bridge in this mode")
    pod = cluster.pod["a"]
    node = cluster.rec.node(pod.node)
    rt = cluster.runtimes[pod.node]
    args = pods.k8s_args(pod.namespace, pod.name, pod.containerId)
    rt.check(pod.containerId, pod.netns_path, pod.ifname, args, prev_result=pod.result)
    kernel.ip(node.netns, "link", "set", pod.host_ifname, "type", "bridge_slave", "hairpin", "off")
    try:
        with pytest.raises(CNIError) as err:
            rt.check(pod.containerId, pod.netns_path, pod.ifname, args, prev_result=pod.result)
        assert err.value.code == 103 and "hairpin mode off" in err.value.msg
    finally:
        kernel.ip(node.netns, "link", "set", pod.host_ifname, "type", "bridge_slave", "hairpin", "on")


def test_vnetd_readiness_follows_the_node_prerequisites(cluster):
    """STATUS through the node's front door is answered by the node's vnetd: ready on a node
    configured as Kubernetes nodes are, code 50 with the fix once forwarding is off."""
    node = cluster.rec.node("node1")
    with open(node.conflist) as f:
        conflist = json.load(f)
    conf = dict(conflist["plugins"][0], cniVersion="1.1.0", name=conflist["name"])
    vnet = os.path.join(node.cniBinDir, "vnet")
    log = os.path.join(cluster.rec.directory, node.name, "vnetd.log")

    def answered_by_vnetd() -> int:
        with open(log) as f:
            return f.read().count('"verb":"STATUS"')

    before = answered_by_vnetd()
    res = run_plugin(vnet, "STATUS", conf, node=node.netns, cni_path=node.cniBinDir)
    assert res.ok, res
    kernel.exec_in(node.netns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])  # the node's namespace
    try:
        res = run_plugin(vnet, "STATUS", conf, node=node.netns, cni_path=node.cniBinDir)
    finally:
        kernel.exec_in(node.netns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    assert not res.ok and res.out["code"] == 50, res
    assert "sysctl -w net.ipv4.ip_forward=1" in res.out["msg"]
    assert answered_by_vnetd() == before + 2
    assert cluster.call("c", cluster.web.clusterIP).ok  # forwarding is back


def test_a_deleted_endpoint_leaves_the_service(cluster):
    """Runs last: s2 goes, `spread` keeps answering from s1 only."""
    s2 = cluster.pod.pop("s2")
    cluster.backends.pop().close()
    pods.delete_pod(cluster.rec, s2.node, s2.name, runtime=cluster.runtimes[s2.node])
    assert {cluster.call("d", cluster.spread.clusterIP).backend for _ in range(8)} == {"s1"}
    saved = kernel.exec_in(cluster.rec.node("node1").netns, ["iptables-save", "-t", "nat"]).stdout
    assert s2.address not in saved


# --- the prerequisites, on a bare node namespace -----------------------------------------------
def test_status_reports_missing_forwarding_with_the_fix(cni_bin, node_ns, tmp_path, state_dir):
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", ["10.240.0.36", "10.240.0.37"]))
    conf = {"cniVersion": "1.1.0", "name": "vntnet", "type": "vnet", "bridge": "vntbr0", "stateDir": state_dir,
            "ipam": {"type": "vnet-ipam", "metadataFile": str(md), "stateDir": state_dir}}
    vnet = os.path.join(cni_bin, "vnet")
    res = run_plugin(vnet, "STATUS", conf, node=node_ns, cni_path=cni_bin)
    assert not res.ok and res.out["code"] == 50, res
    assert "ip_forward" in res.out["msg"] and "sysctl -w net.ipv4.ip_forward=1" in res.out["msg"]
    status = subprocess.run(["ip", "netns", "exec", node_ns, os.path.join(os.path.dirname(sys.executable),
                             "vnetctl"), "status", "--state-dir", state_dir], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "NOT READY" in status.stdout and "FAIL ip_forward" in status.stdout
    assert ns_exec(node_ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1").returncode == 0  # the test's namespace
    res = run_plugin(vnet, "STATUS", conf, node=node_ns, cni_path=cni_bin)
    assert res.ok, res
