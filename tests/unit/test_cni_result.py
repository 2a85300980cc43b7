"""The result model: what each spec version carries, and conversion up and down."""

from __future__ import annotations

import pytest

from vnetcni.cni.errors import CNIError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG
from vnetcni.cni.result import DNS, Interface, IPConfig, Result, Route, convert

FULL = Result(
    interfaces=[Interface("azure0", "aa:bb:cc:00:00:01", mtu=1500),
                Interface("eth0", "aa:bb:cc:00:00:02", "/run/netns/vnt-p1", mtu=1500,
                          socket_path="/run/vhost.sock", pci_id="0000:00:1f.6")],
    ips=[IPConfig("10.240.0.36/16", "10.240.0.1", 1), IPConfig("fd00::24/64", "fd00::1", 1)],
    routes=[Route("0.0.0.0/0", "10.240.0.1", mtu=1400, advmss=1360, priority=10, table=100, scope=0),
            Route("::/0", "fd00::1")],
    dns=DNS(["168.63.129.16"], "cluster.local", ["svc.cluster.local"], ["ndots:5"]),
)


def test_1_1_0_carries_everything():
    d = FULL.to_dict("1.1.0")
    assert d["interfaces"][1] == {"name": "eth0", "mac": "aa:bb:cc:00:00:02", "sandbox": "/run/netns/vnt-p1",
                                  "mtu": 1500, "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"}
    assert d["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.240.0.1", "mtu": 1400, "advmss": 1360,
                              "priority": 10, "table": 100, "scope": 0}
    assert d["ips"][0] == {"interface": 1, "address": "10.240.0.36/16", "gateway": "10.240.0.1"}
    assert d["dns"] == {"nameservers": ["168.63.129.16"], "domain": "cluster.local",
                        "search": ["svc.cluster.local"], "options": ["ndots:5"]}
    assert Result.from_dict(d) == FULL


def test_1_0_0_has_no_ip_version_and_no_1_1_fields():
    d = FULL.to_dict("1.0.0")
    assert d["cniVersion"] == "1.0.0"
    assert all("version" not in ip for ip in d["ips"])
    assert d["interfaces"][1] == {"name": "eth0", "mac": "aa:bb:cc:00:00:02", "sandbox": "/run/netns/vnt-p1"}
    assert d["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.240.0.1"}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_0_x_carries_ip_version(version):
    d = FULL.to_dict(version)
    assert [ip["version"] for ip in d["ips"]] == ["4", "6"]
    assert "mtu" not in d["interfaces"][0] and "table" not in d["routes"][0]


def test_conversion_up_keeps_what_the_old_version_said():
    old = {"cniVersion": "0.3.1",
           "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
           "ips": [{"version": "4", "interface": 0, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
           "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}
    assert convert(old, "1.1.0") == {
        "cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"interface": 0, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
        "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}
    assert convert(convert(old, "1.1.0"), "0.3.1") == old


def test_an_ipam_result_has_no_interfaces_so_an_index_is_dropped():
    ipam = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24", "interface": 0}]}
    assert Result.from_dict(ipam).ips == [IPConfig("10.1.2.3/24")]


@pytest.mark.parametrize("bad, code", [
    ([], DECODE_FAILURE), ("x", DECODE_FAILURE),
    ({"cniVersion": "0.2.0"}, INCOMPATIBLE_VERSION),
    ({"cniVersion": "one"}, INVALID_CONFIG),
    ({"interfaces": {}}, INVALID_CONFIG), ({"interfaces": "eth0"}, INVALID_CONFIG),
    ({"interfaces": [{"mac": "x"}]}, INVALID_CONFIG), ({"interfaces": [{"name": "e", "mtu": "1500"}]}, INVALID_CONFIG),
    ({"interfaces": [{"name": "e", "mtu": -1}]}, INVALID_CONFIG),
    ({"interfaces": [{"name": "e", "mac": 1}]}, INVALID_CONFIG),
    ({"ips": [{}]}, INVALID_CONFIG), ({"ips": ["10.0.0.1/8"]}, INVALID_CONFIG),
    ({"ips": [{"address": "10.0.0.1"}]}, INVALID_CONFIG),
    ({"ips": [{"address": "10.0.0.1/255.0.0.0"}]}, INVALID_CONFIG),
    ({"ips": [{"address": "10.0.0.1/33"}]}, INVALID_CONFIG),
    ({"ips": [{"address": "nope/8"}]}, INVALID_CONFIG),
    ({"ips": [{"address": "10.0.0.1/8", "gateway": "nope"}]}, INVALID_CONFIG),
    ({"ips": [{"address": "10.0.0.1/8", "gateway": "fd00::1"}]}, INVALID_CONFIG),
    ({"ips": [{"address": "10.0.0.1/8", "version": "6"}]}, INVALID_CONFIG),
    ({"ips": [{"address": "10.0.0.1/8", "interface": True}]}, INVALID_CONFIG),
    ({"interfaces": [{"name": "e"}], "ips": [{"address": "10.0.0.1/8", "interface": 1}]}, INVALID_CONFIG),
    ({"routes": [{"gw": "10.0.0.1"}]}, INVALID_CONFIG), ({"routes": [{"dst": "x"}]}, INVALID_CONFIG),
    ({"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}, INVALID_CONFIG),
    ({"routes": [{"dst": "0.0.0.0/0", "table": 1.5}]}, INVALID_CONFIG),
    ({"dns": []}, INVALID_CONFIG), ({"dns": {"nameservers": "8.8.8.8"}}, INVALID_CONFIG),
    ({"dns": {"search": [1]}}, INVALID_CONFIG), ({"dns": {"domain": 1}}, INVALID_CONFIG),
])
def test_bad_results_are_cni_errors(bad, code):
    with pytest.raises(CNIError) as info:
        Result.from_dict(bad)
    assert info.value.code == code


def test_to_dict_refuses_versions_we_do_not_speak():
    with pytest.raises(CNIError) as info:
        Result().to_dict("0.2.0")
    assert info.value.code == INCOMPATIBLE_VERSION


def test_records_compare_by_value_and_are_not_hashable():
    assert Result() == Result() and Result() != Result(ips=[IPConfig("10.0.0.1/8")])
    assert Interface("a") != Route("a") and "IPConfig(address='10.0.0.1/8'" in repr(IPConfig("10.0.0.1/8"))
    with pytest.raises(TypeError):
        hash(Result())
    assert Result(dns=None).dns == DNS() and DNS(None).nameservers == []


def test_results_copy_and_pickle():
    import copy
    import pickle

    clone = copy.deepcopy(FULL)
    assert clone == FULL == pickle.loads(pickle.dumps(FULL))
    clone.ips[0].gateway = "10.240.0.254"
    assert clone != FULL  # a deep copy shares nothing
