"""The simulated cloud's address plan, names, node conflists and fabric rules (pure, no root)."""

from __future__ import annotations

import pytest

from vnetcni.cni.config import parse_conflist
from vnetcni.ipam.metadata import pool_from_metadata, render_node
from vnetcni.sim import enforcement, naming
from vnetcni.sim.addressing import plan_addresses
from vnetcni.sim.fabric import conflist_for
from vnetcni.sim.model import FabricRecord, NodeRecord
from vnetcni.sim.pods import PodRecord
from vnetcni.sim.runtime import k8s_args


def test_plan_gives_every_node_its_own_block_after_the_reserved_addresses():
    plan = plan_addresses("demo", "10.240.0.0/16", 3, 30)
    assert plan.gateway == "10.240.0.1"
    assert [n.primary for n in plan.nodes] == ["10.240.0.4", "10.240.0.35", "10.240.0.66"]
    assert plan.nodes[0].secondaries[0] == "10.240.0.5" and plan.nodes[0].secondaries[-1] == "10.240.0.34"
    owned = [a for n in plan.nodes for a in (n.primary, *n.secondaries)]
    assert len(owned) == len(set(owned)) == 93
    reserved = {"10.240.0.0", "10.240.0.1", "10.240.0.2", "10.240.0.3", "10.240.255.255"}
    assert not reserved & set(owned)
    assert all(len(n.secondaries) == 30 for n in plan.nodes)
    assert len({n.mac for n in plan.nodes}) == 3
    assert all(n.mac.startswith("00:0d:3a:") for n in plan.nodes)


def test_plan_fills_a_small_subnet_exactly_and_refuses_one_address_more():
    # /27: 32 addresses, 4 reserved at the start, broadcast at the end: 27 assignable = 3 x (1 + 8).
    plan = plan_addresses("x", "192.168.7.0/27", 3, 8)
    assert plan.nodes[-1].secondaries[-1] == "192.168.7.30"
    with pytest.raises(ValueError, match="27 assignable addresses"):
        plan_addresses("x", "192.168.7.0/27", 3, 9)


@pytest.mark.parametrize("subnet, nodes, ips, message", [
    ("10.240.0.1/16", 1, 1, "invalid subnet"),
    ("fd00::/64", 1, 1, "not IPv4"),
    ("10.0.0.0/29", 1, 1, "too small"),
    ("127.0.0.0/8", 1, 1, "not a usable"),
    ("10.0.0.0/16", 0, 1, "--nodes"),
    ("10.0.0.0/16", 1, 0, "--ips-per-node"),
])
def test_plan_rejects_bad_input_with_a_clear_message(subnet, nodes, ips, message):
    with pytest.raises(ValueError, match=message):
        plan_addresses("x", subnet, nodes, ips)


def test_metadata_of_a_planned_node_parses_back_to_its_own_pool():
    plan = plan_addresses("demo", "10.240.0.0/16", 2, 5)
    node = plan.nodes[1]
    pool = pool_from_metadata(render_node(node.mac, plan.subnet, node.primary, node.secondaries), node.mac)
    assert pool.primary == node.primary
    assert list(pool.addresses) == list(node.secondaries)
    assert pool.gateway == plan.gateway


def test_names_are_prefixed_and_the_owned_pattern_does_not_reach_a_longer_fabric(monkeypatch):
    monkeypatch.setenv("VNET_SIM_PREFIX", "vnt")
    assert naming.fabric_netns("a") == "vnta-fabric"
    assert naming.node_netns("a", "node2") == "vnta-node2"
    pattern = naming.owned_netns_pattern("a")
    assert pattern.match("vnta-fabric") and pattern.match("vnta-node12")
    assert pattern.match(naming.pod_netns("a", "0123456789abcdef"))
    assert not pattern.match("vnta-b-fabric") and not pattern.match("vnta-b-node1")
    assert not pattern.match("vnta-pod-xyz")


@pytest.mark.parametrize("bad", ["", "-a", "a-", "A", "a_b", "x" * 25, "a/b"])
def test_bad_fabric_names_are_refused(bad):
    with pytest.raises(ValueError, match="invalid fabric name"):
        naming.check_fabric_name(bad)


def test_bad_prefix_is_refused(monkeypatch):
    monkeypatch.setenv("VNET_SIM_PREFIX", "../x")
    with pytest.raises(ValueError, match="VNET_SIM_PREFIX"):
        naming.prefix()


def _node(name="node1", primary="10.240.0.4", secondaries=("10.240.0.5", "10.240.0.6")) -> NodeRecord:
    return NodeRecord(name=name, netns=f"vnt-{name}", primary=primary, mac="00:0d:3a:00:00:01",
                      fabricPort=naming.fabric_port(name), stateDir="/run/x/state", conflist="/run/x/c",
                      cniBinDir="/run/x/bin", metadataUrl=naming.metadata_url(), metadataFile="/run/x/i.xml",
                      secondaries=list(secondaries))


def test_node_conflist_is_vnet_with_uplink_then_portmap():
    conf = conflist_for(_node(), reuse_cooldown=0)
    parsed = parse_conflist(conf)
    assert parsed.cni_version == "1.0.0"
    vnet, portmap = conf["plugins"]
    assert vnet["type"] == "vnet" and vnet["bridge"] == "azure0" and vnet["uplink"] == "eth0"
    assert vnet["ipam"]["type"] == "vnet-ipam"
    assert vnet["ipam"]["metadataUrl"].startswith("http://127.0.0.1:")
    assert vnet["ipam"]["stateDir"] == vnet["stateDir"]
    assert vnet["ipam"]["reuseCooldownSeconds"] == 0
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_fabric_record_round_trips_through_its_json_form():
    rec = FabricRecord(name="f", subnet="10.240.0.0/16", gateway="10.240.0.1", fabricNetns="vntf-fabric",
                       fabricBridge="vnet0", ipsPerNode=2, nodes=[_node()])
    d = rec.to_dict()
    for key in ("name", "subnet", "gateway", "fabricNetns", "fabricBridge", "nodes"):
        assert key in d
    for key in ("name", "netns", "primary", "mac", "eth0", "fabricPort", "bridge", "stateDir", "conflist",
                "cniBinDir", "metadataUrl", "metadataPid", "secondaries", "vnetdPid"):
        assert key in d["nodes"][0]
    d["futureKey"] = 1
    assert FabricRecord.from_dict(d) == rec


def test_ruleset_counts_unicast_per_port_and_enforces_owned_sources_only_when_asked():
    rec = FabricRecord(name="f", subnet="10.240.0.0/16", gateway="10.240.0.1", fabricNetns="vntf-fabric",
                       fabricBridge="vnet0", ipsPerNode=2, nodes=[_node()])
    plain = enforcement.ruleset(rec)
    assert 'iifname "p-node1"' in plain and 'oifname "p-node1"' in plain
    assert "drop" not in plain
    rec.enforceSource = True
    strict = enforcement.ruleset(rec)
    assert "10.240.0.4, 10.240.0.5, 10.240.0.6" in strict
    assert strict.count("drop") == 2  # IPv4 and ARP


def test_pod_record_reads_address_mac_and_host_interface_from_the_result():
    result = {"cniVersion": "1.0.0",
              "interfaces": [{"name": "azure0", "mac": "aa"}, {"name": "azv0123456789a", "mac": "bb"},
                             {"name": "eth0", "mac": "cc:cc", "sandbox": "/run/netns/p"}],
              "ips": [{"address": "10.240.0.5/16", "gateway": "10.240.0.1", "interface": 2}]}
    p = PodRecord(node="node1", namespace="default", name="web", containerId="c" * 64, netns="p",
                  ifname="eth0", result=result, created="")
    assert (p.address, p.mac, p.host_ifname) == ("10.240.0.5", "cc:cc", "azv0123456789a")


def test_k8s_args_are_those_kubelet_runtimes_pass():
    assert k8s_args("ns", "pod", "cid") == {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns",
                                            "K8S_POD_NAME": "pod", "K8S_POD_INFRA_CONTAINER_ID": "cid"}


def test_transparent_node_conflist_and_the_sdn_rules():
    from vnetcni.sim import sdn

    plan = plan_addresses("demo", "10.240.0.0/24", 2, 2)
    nodes = [NodeRecord(name=f"node{a.index}", netns=f"vsim-demo-node{a.index}", primary=a.primary, mac=a.mac,
                        fabricPort=f"p-node{a.index}", stateDir="/s", conflist="/c", cniBinDir="/b",
                        metadataUrl="http://127.0.0.1:16999/x", metadataFile="/m", secondaries=list(a.secondaries),
                        bridge="") for a in plan.nodes]
    rec = FabricRecord(name="demo", subnet=plan.subnet, gateway=plan.gateway, fabricNetns="vsim-demo-fabric",
                       fabricBridge="vnet0", ipsPerNode=2, mode="transparent", nodes=nodes)
    main = parse_conflist(conflist_for(nodes[0], 0, "transparent")).plugins[0]
    assert main["mode"] == "transparent" and "bridge" not in main and main["uplink"] == "eth0"
    assert sdn.routes(rec) == ["route replace 10.240.0.5/32 via 10.240.0.4 dev vnet0",
                               "route replace 10.240.0.6/32 via 10.240.0.4 dev vnet0",
                               "route replace 10.240.0.8/32 via 10.240.0.7 dev vnet0",
                               "route replace 10.240.0.9/32 via 10.240.0.7 dev vnet0"]
    rules = sdn.arp_ruleset(rec)
    assert "elements = { 10.240.0.1, 10.240.0.5, 10.240.0.6, 10.240.0.8, 10.240.0.9 }" in rules
    assert "10.240.0.4" not in rules and "10.240.0.7" not in rules  # nodes answer for their primaries


def test_dual_stack_plan_mirrors_the_ipv4_layout_and_the_fabric_counts_ipv6():
    plan = plan_addresses("demo", "10.240.0.0/24", 2, 2, "fd00:10:240::/64")
    assert (plan.subnet6, plan.gateway6, plan.prefixlen6) == ("fd00:10:240::/64", "fd00:10:240::1", 64)
    assert [(n.primary6, n.secondaries6) for n in plan.nodes] == [
        ("fd00:10:240::4", ("fd00:10:240::5", "fd00:10:240::6")),
        ("fd00:10:240::7", ("fd00:10:240::8", "fd00:10:240::9"))]
    assert plan_addresses("demo", "10.240.0.0/24", 2, 2).nodes[0].primary6 == ""
    with pytest.raises(ValueError, match="IPv6 subnet"):
        plan_addresses("demo", "10.240.0.0/24", 2, 2, "10.1.0.0/16")
    nodes = [NodeRecord(name=f"node{a.index}", netns="n", primary=a.primary, mac=a.mac, fabricPort=f"p-node{a.index}",
                        stateDir="/s", conflist="/c", cniBinDir="/b", metadataUrl="u", metadataFile="/m",
                        secondaries=list(a.secondaries), primary6=a.primary6, secondaries6=list(a.secondaries6))
             for a in plan.nodes]
    rec = FabricRecord(name="demo", subnet=plan.subnet, gateway=plan.gateway, fabricNetns="f", fabricBridge="vnet0",
                       ipsPerNode=2, enforceSource=True, subnet6=plan.subnet6, gateway6=plan.gateway6, nodes=nodes)
    rules = enforcement.ruleset(rec)
    assert "counter ipv6_from_node1" in rules and "oifname \"p-node2\"" in rules
    assert "set owned6_node1 { type ipv6_addr; elements = { fd00:10:240::4, fd00:10:240::5, fd00:10:240::6 } }" in rules
    assert "ip6 saddr != fe80::/10" in rules
    from vnetcni.sim import sdn

    assert "route replace fd00:10:240::8/128 via fd00:10:240::7 dev vnet0" in sdn.routes(rec)
    assert "neigh replace proxy fd00:10:240::8 dev vnet0" in sdn.routes(rec)
