"""Dual-stack vnet-ipam: the metadata lists an IPv6 subnet beside the IPv4 one; every pod gets one
address of each family, results carry both in every spec version, capacity is per family."""

from __future__ import annotations

import json

import pytest

from vnetcni.cni import dispatch
from vnetcni.cni.errors import CNIError
from vnetcni.ipam.allocator import allocate, release
from vnetcni.ipam.metadata import MetadataError, parse_interfaces, render_node, select_pools
from vnetcni.ipam.model import IpamState
from vnetcni.ipam.plugin import IpamPlugin
from vnetcni.ipam.sources import FakeMetadataSource
from vnetcni.ipam.view import node_capacity
from support.statefiles import load_state

V4 = [f"10.240.0.{i}" for i in range(36, 40)]
V6 = [f"fd00:10:240::{i:x}" for i in range(36, 39)]  # one fewer: IPv6 bounds this node
XML = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", V4,
                  ipv6=("fd00:10:240::/64", "fd00:10:240::23", V6))


def test_metadata_gives_a_pool_per_family():
    pool, pool6 = select_pools(parse_interfaces(XML))
    assert (pool.subnet, pool.gateway, pool.primary) == ("10.240.0.0/16", "10.240.0.1", "10.240.0.35")
    assert (pool6.subnet, pool6.gateway, pool6.primary) == ("fd00:10:240::/64", "fd00:10:240::1", "fd00:10:240::23")
    assert pool6.addresses == tuple(V6)
    single = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", V4)
    assert select_pools(parse_interfaces(single))[1] is None


def test_two_primary_ipv6_subnets_are_refused():
    xml = XML.replace(b'<IPSubnet Prefix="fd00:10:240::/64">',
                      b'<IPSubnet Prefix="fd00:99::/64"><IPAddress Address="fd00:99::4" IsPrimary="true"/>'
                      b'</IPSubnet><IPSubnet Prefix="fd00:10:240::/64">')
    with pytest.raises(MetadataError, match="2 primary IPv6 addresses"):
        select_pools(parse_interfaces(xml))


def _state() -> IpamState:
    state = IpamState()
    state.pool, state.pool6 = select_pools(parse_interfaces(XML))
    return state


def test_one_address_per_family_and_both_cool_on_release():
    state = _state()
    a = allocate(state, "net", "c1", "eth0", 100.0)
    assert (a.address, a.gateway, a.address6, a.gateway6) == (
        "10.240.0.36/16", "10.240.0.1", "fd00:10:240::24/64", "fd00:10:240::1")
    assert allocate(state, "net", "c1", "eth0", 101.0) is a
    release(state, a.key, 102.0, 30.0)
    assert set(state.cooling) == {"10.240.0.36", "fd00:10:240::24"}
    b = allocate(state, "net", "c2", "eth0", 103.0)
    assert b.ip == "10.240.0.37" and b.address6 == "fd00:10:240::25/64"  # the rested ones are skipped


def test_the_smaller_family_exhausts_first_and_nothing_half_allocated():
    state = _state()
    for i in range(3):
        allocate(state, "net", f"c{i}", "eth0", 100.0)
    with pytest.raises(CNIError) as err:
        allocate(state, "net", "c9", "eth0", 100.0)
    assert err.value.code == 100 and "no IPv6 address available on this node: 3 of 3 in use" in err.value.msg
    assert len(state.allocations) == 3 and "10.240.0.39" not in state.holders()


def test_document_round_trip_keeps_both_families():
    state = _state()
    allocate(state, "net", "c1", "eth0", 100.0)
    again = IpamState.from_doc(json.loads(json.dumps(state.to_doc())))
    assert again.pool6 == state.pool6
    assert again.allocations["net/c1/eth0"].address6 == "fd00:10:240::24/64"
    assert again.holders().keys() == {"10.240.0.36", "fd00:10:240::24"}


def test_capacity_is_per_family_and_the_smaller_bounds_max_pods():
    cap = node_capacity(FakeMetadataSource(XML))
    assert cap.per_family == {"IPv4": 4, "IPv6": 3} and cap.max_pods == 3
    assert cap.to_dict()["subnet6"] == "fd00:10:240::/64"


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_results_carry_both_families_in_every_version(tmp_path, version):
    plugin = IpamPlugin(source_factory=lambda cfg: FakeMetadataSource(XML))
    conf = {"cniVersion": version, "name": "vntnet", "type": "bridge",
            "ipam": {"type": "vnet-ipam", "stateDir": str(tmp_path)}}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni"}
    out, code = dispatch.run(plugin, env, json.dumps(conf).encode())
    res = json.loads(out)
    assert code == 0, res
    assert res["cniVersion"] == version
    assert [ip["address"] for ip in res["ips"]] == ["10.240.0.36/16", "fd00:10:240::24/64"]
    assert [ip["gateway"] for ip in res["ips"]] == ["10.240.0.1", "fd00:10:240::1"]
    if version < "1.0.0":
        assert [ip["version"] for ip in res["ips"]] == ["4", "6"]
    else:
        assert all("version" not in ip for ip in res["ips"])
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.240.0.1"}, {"dst": "::/0", "gw": "fd00:10:240::1"}]
    if version >= "0.4.0":
        check = dict(conf, prevResult=res)
        out, code = dispatch.run(plugin, dict(env, CNI_COMMAND="CHECK"), json.dumps(check).encode())
        assert code == 0, out
        only_v4 = dict(res, ips=res["ips"][:1])
        out, code = dispatch.run(plugin, dict(env, CNI_COMMAND="CHECK"),
                                 json.dumps(dict(conf, prevResult=only_v4)).encode())
        assert code == 1 and json.loads(out)["code"] == 103
    out, code = dispatch.run(plugin, dict(env, CNI_COMMAND="DEL", CNI_NETNS=""), json.dumps(conf).encode())
    assert code == 0
    state = load_state(tmp_path / "ipam.json")
    assert state["allocations"] == {} and state["pool6"]["subnet"] == "fd00:10:240::/64"
