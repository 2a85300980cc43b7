"""Network configurations, configuration lists, runtimeConfig and capability arguments."""

from __future__ import annotations

import json

import pytest

from vnetcni.cni.config import ConfList, NetConf, PortMapping, parse_conflist, parse_netconf
from vnetcni.cni.errors import CNIError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG
from vnetcni.cni.result import IPConfig, Result

BASE = {"cniVersion": "1.0.0", "name": "vnt-net", "type": "vnet"}


def conf_with(**fields) -> dict:
    return {**BASE, **fields}


def code_of(call, *args, **kwargs) -> int:
    with pytest.raises(CNIError) as info:
        call(*args, **kwargs)
    return info.value.code


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_every_supported_version_parses(version):
    conf = parse_netconf(json.dumps(conf_with(cniVersion=version)).encode())
    assert (conf.cni_version, conf.name, conf.type) == (version, "vnt-net", "vnet")


@pytest.mark.parametrize("version, code", [
    ("0.1.0", INCOMPATIBLE_VERSION), ("0.2.0", INCOMPATIBLE_VERSION), ("1.2.0", INCOMPATIBLE_VERSION),
    ("2.0.0", INCOMPATIBLE_VERSION), ("1.0", INVALID_CONFIG), ("1.0.0 ", INVALID_CONFIG),
    ("v1.0.0", INVALID_CONFIG), ("\u00b9.0.0", INVALID_CONFIG), ("\u0661.0.0", INVALID_CONFIG),
    ("", INVALID_CONFIG), (1.0, INVALID_CONFIG), (None, INVALID_CONFIG), (["1.0.0"], INVALID_CONFIG),
])
def test_bad_versions(version, code):
    assert code_of(parse_netconf, conf_with(cniVersion=version)) == code


@pytest.mark.parametrize("conf", [
    {"name": "n", "type": "t"},
    conf_with(name=None), conf_with(name=""), conf_with(name="bad name"), conf_with(name="net\n"),
    conf_with(name="-net"), conf_with(name=7),
    conf_with(type=""), conf_with(type=3), {"cniVersion": "1.0.0", "name": "n"},
    conf_with(ipam=[]), conf_with(dns="8.8.8.8"), conf_with(runtimeConfig=[]), conf_with(args=1),
    conf_with(capabilities=True), conf_with(prevResult=[]), conf_with(prevResult="x"),
])
def test_invalid_configs_are_code_7(conf):
    assert code_of(parse_netconf, conf) == INVALID_CONFIG


def test_type_may_be_omitted_when_not_needed():
    assert parse_netconf({"cniVersion": "1.0.0", "name": "n"}, need_type=False).type == ""


def test_decode_errors_are_code_6():
    assert code_of(parse_netconf, b"{") == DECODE_FAILURE
    assert code_of(parse_netconf, b"\xff\xfe") == DECODE_FAILURE


def test_accessors():
    conf = parse_netconf(conf_with(ipam={"type": "vnet-ipam"}, dns={"nameservers": ["10.0.0.10"]},
                                   prevResult=None, mtu=1500))
    assert conf.ipam == {"type": "vnet-ipam"} and conf.dns == {"nameservers": ["10.0.0.10"]}
    assert conf.prev_result is None and conf.previous_result() is None
    assert conf.get("mtu") == 1500 and conf.get("absent", 3) == 3
    assert "raw" not in repr(conf)


@pytest.mark.parametrize("prev_version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_prev_result_of_any_version(prev_version):
    prev = {"cniVersion": prev_version, "ips": [{"address": "10.240.0.36/16", "gateway": "10.240.0.1"}]}
    if prev_version < "1.0.0":
        prev["ips"][0]["version"] = "4"
    conf = parse_netconf(conf_with(cniVersion="1.1.0", prevResult=prev))
    assert conf.previous_result() == Result(ips=[IPConfig("10.240.0.36/16", "10.240.0.1")])


def test_runtime_config_keys_are_case_insensitive():
    conf = parse_netconf(conf_with(runtimeConfig={"PortMappings": [], "bandwidth": {"ingressRate": 1}}))
    assert conf.runtime_config("portMappings") == []
    assert conf.runtime_config("BANDWIDTH") == {"ingressRate": 1}
    assert conf.runtime_config("ips", ["none"]) == ["none"]
    assert parse_netconf(BASE).runtime_config("portMappings") is None


def test_port_mappings_from_containerd_and_podman():
    containerd = [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "TCP", "HostIP": "127.0.0.1"},
                  {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp"}]
    podman = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
              {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    expected = [PortMapping(8080, 80, "tcp", "127.0.0.1"), PortMapping(5353, 53, "udp", "")]
    for mappings in (containerd, podman):
        conf = parse_netconf(conf_with(runtimeConfig={"portMappings": mappings}))
        assert conf.port_mappings() == expected
    assert parse_netconf(BASE).port_mappings() == []
    assert parse_netconf(conf_with(runtimeConfig={"portMappings": [{"hostPort": 1, "containerPort": 2}]})
                         ).port_mappings() == [PortMapping(1, 2)]


@pytest.mark.parametrize("mappings", [
    {"hostPort": 80}, "80:80", 80, [80], [{"hostPort": 80}], [{"containerPort": 80}],
    [{"hostPort": "80", "containerPort": 80}], [{"hostPort": True, "containerPort": 80}],
    [{"hostPort": 0, "containerPort": 80}], [{"hostPort": 70000, "containerPort": 80}],
    [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}],
    [{"hostPort": 80, "containerPort": 80, "protocol": 6}],
    [{"hostPort": 80, "containerPort": 80, "hostIP": 127}],
])
def test_bad_port_mappings_are_code_7(mappings):
    conf = parse_netconf(conf_with(runtimeConfig={"portMappings": mappings}))
    assert code_of(conf.port_mappings) == INVALID_CONFIG


def test_port_mapping_is_a_hashable_value():
    assert len({PortMapping(1, 2), PortMapping(1, 2), PortMapping(1, 2, "udp")}) == 2
    with pytest.raises(AttributeError):
        PortMapping(1, 2).host_port = 3  # type: ignore[misc]


CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "vnt-net",
    "plugins": [
        {"type": "vnet", "bridge": "azure0", "ipam": {"type": "vnet-ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
    ],
}


def test_conflist_parses():
    cl = parse_conflist(json.dumps(CONFLIST).encode())
    assert (cl.cni_version, cl.name, [p["type"] for p in cl.plugins]) == ("1.0.0", "vnt-net", ["vnet", "portmap"])
    assert not cl.disable_check and not cl.disable_gc
    assert "vnet" in repr(cl)


@pytest.mark.parametrize("flag, expected", [(True, True), (False, False), ("true", True), ("False", False)])
def test_disable_flags_accept_libcni_spellings(flag, expected):
    cl = parse_conflist({**CONFLIST, "disableCheck": flag, "disableGC": flag})
    assert cl.disable_check is expected and cl.disable_gc is expected


@pytest.mark.parametrize("changes, code", [
    ({"cniVersion": None}, INVALID_CONFIG),
    ({"cniVersion": "0.2.0"}, INCOMPATIBLE_VERSION),
    ({"name": "a b"}, INVALID_CONFIG),
    ({"plugins": []}, INVALID_CONFIG),
    ({"plugins": {"type": "vnet"}}, INVALID_CONFIG),
    ({"plugins": [{"bridge": "x"}]}, INVALID_CONFIG),
    ({"plugins": ["vnet"]}, INVALID_CONFIG),
    ({"plugins": [{"type": "vnet", "capabilities": ["portMappings"]}]}, INVALID_CONFIG),
    ({"disableCheck": "yes"}, INVALID_CONFIG),
    ({"disableGC": 1}, INVALID_CONFIG),
    ({"cniVersions": "1.1.0"}, INVALID_CONFIG),
    ({"cniVersions": [1]}, INVALID_CONFIG),
    ({"cniVersion": "9.0.0", "cniVersions": ["8.0.0"]}, INCOMPATIBLE_VERSION),
])
def test_bad_conflists(changes, code):
    conf = {**CONFLIST, **changes}
    conf = {k: v for k, v in conf.items() if v is not None}
    assert code_of(parse_conflist, conf) == code


def test_cni_versions_pick_the_highest_we_speak():
    assert parse_conflist({**CONFLIST, "cniVersions": ["1.0.0", "1.1.0", "9.9.9"]}).cni_version == "1.1.0"
    assert parse_conflist({**CONFLIST, "cniVersion": "9.0.0", "cniVersions": ["0.4.0"]}).cni_version == "0.4.0"
    no_single = {k: v for k, v in CONFLIST.items() if k != "cniVersion"}
    assert parse_conflist({**no_single, "cniVersions": ["0.3.1"]}).cni_version == "0.3.1"


def test_plugin_config_as_libcni_builds_it():
    cl = parse_conflist(CONFLIST)
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.240.0.36/16"}]}
    runtime = {"PortMappings": [{"HostPort": 8080, "ContainerPort": 80}], "bandwidth": {"x": 1}}
    first = cl.plugin_config(0, None, runtime)
    assert first == {"type": "vnet", "bridge": "azure0", "ipam": {"type": "vnet-ipam"},
                     "name": "vnt-net", "cniVersion": "1.0.0"}
    second = cl.plugin_config(1, prev, runtime)
    assert second["prevResult"] == prev and second["snat"] is False
    assert second["runtimeConfig"] == {"portMappings": runtime["PortMappings"]}
    assert "runtimeConfig" not in CONFLIST["plugins"][1]  # the list itself is untouched
    built = parse_netconf(second)
    assert built.port_mappings() == [PortMapping(8080, 80)]


def test_plugin_config_drops_a_static_runtime_config_and_disabled_capabilities():
    cl = ConfList("1.1.0", "n", ({"type": "x", "runtimeConfig": {"stale": 1},
                                  "capabilities": {"portMappings": False, "ips": True}},))
    assert "runtimeConfig" not in cl.plugin_config(0, None, {"portMappings": [1]})
    assert cl.plugin_config(0, None, {"IPS": ["10.0.0.1/24"]})["runtimeConfig"] == {"ips": ["10.0.0.1/24"]}


def test_netconf_equality_and_immutability():
    a, b = parse_netconf(dict(BASE)), parse_netconf(dict(BASE))
    assert a == b and a != parse_netconf(conf_with(name="other"))
    with pytest.raises(AttributeError):
        a.name = "x"  # type: ignore[misc]
    assert isinstance(a, NetConf) and a.replace(name="x").name == "x"
