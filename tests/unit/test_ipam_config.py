"""The ipam section: defaults, precedence, and a clear INVALID_CONFIG error for each mistake."""

from __future__ import annotations

import json

import pytest

from vnetcni.cni import dispatch
from vnetcni.cni.config import parse_netconf
from vnetcni.cni.errors import CNIError
from vnetcni.ipam.config import DEFAULT_METADATA_URL, IpamConfig
from vnetcni.ipam.plugin import IpamPlugin


def conf(ipam: dict, **top) -> dict:
    return {"cniVersion": "1.0.0", "name": "vntnet", "type": "bridge", "ipam": {"type": "vnet-ipam", **ipam}, **top}


def test_defaults():
    cfg = IpamConfig.from_netconf(parse_netconf(conf({})))
    assert cfg.metadata_url is None and cfg.metadata_file is None and cfg.mac is None
    assert (cfg.refresh_seconds, cfg.timeout_seconds, cfg.cooldown_seconds) == (10.0, 2.0, 30.0)
    assert cfg.state_dir == "/var/run/vnet"
    assert cfg.routes is None and cfg.dns.to_dict() == {}
    assert cfg.source_description == DEFAULT_METADATA_URL


def test_state_dir_precedence():
    assert IpamConfig.coerce(conf({}, stateDir="/tmp/top")).state_dir == "/tmp/top"
    assert IpamConfig.coerce(conf({"stateDir": "/tmp/ipam/"}, stateDir="/tmp/top")).state_dir == "/tmp/ipam"


def test_coerce_accepts_every_form():
    whole = conf({"metadataFile": "/etc/vnet/if.xml", "macAddress": "000D3A51C490"}, stateDir="/tmp/s")
    forms = [whole, parse_netconf(whole), IpamConfig.coerce(whole)]
    assert len({(c.metadata_file, c.mac, c.state_dir) for c in map(IpamConfig.coerce, forms)}) == 1
    just_ipam = IpamConfig.coerce(whole["ipam"])
    assert just_ipam.mac == "00:0d:3a:51:c4:90" and just_ipam.state_dir == "/var/run/vnet"


def test_routes_and_dns_are_kept():
    cfg = IpamConfig.coerce(conf({"routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.240.0.1"}],
                                  "dns": {"nameservers": ["168.63.129.16"], "search": ["svc"]}}))
    assert [(r.dst, r.gw) for r in cfg.routes] == [("0.0.0.0/0", ""), ("10.0.0.0/8", "10.240.0.1")]
    assert cfg.dns.nameservers == ["168.63.129.16"]


BAD = {
    "refresh string": ({"refreshSeconds": "10"}, "refreshSeconds must be a number"),
    "refresh negative": ({"refreshSeconds": -1}, "refreshSeconds must be at least 0"),
    "refresh bool": ({"refreshSeconds": True}, "refreshSeconds must be a number"),
    "refresh nan": ({"refreshSeconds": float("nan")}, "refreshSeconds must be a number"),
    "timeout zero": ({"metadataTimeoutSeconds": 0}, "metadataTimeoutSeconds must be greater than 0"),
    "timeout huge": ({"metadataTimeoutSeconds": 3600}, "metadataTimeoutSeconds must be at most 60"),
    "cooldown list": ({"reuseCooldownSeconds": [30]}, "reuseCooldownSeconds must be a number"),
    "url scheme": ({"metadataUrl": "file:///etc/passwd"}, "http:// or https://"),
    "url type": ({"metadataUrl": 5}, "metadataUrl must be a non-empty string"),
    "url empty": ({"metadataUrl": " "}, "metadataUrl must be a non-empty string"),
    "url and file": ({"metadataUrl": "http://x/", "metadataFile": "/x"}, "not both"),
    "file relative": ({"metadataFile": "if.xml"}, "metadataFile must be an absolute path"),
    "mac": ({"macAddress": "00:11:22"}, "macAddress '00:11:22' is not a MAC address"),
    "state dir relative": ({"stateDir": "state"}, "ipam.stateDir must be an absolute path"),
    "state dir type": ({"stateDir": 1}, "ipam.stateDir must be an absolute path"),
    "routes type": ({"routes": {"dst": "0.0.0.0/0"}}, "routes must be a list"),
    "route no dst": ({"routes": [{"gw": "10.0.0.1"}]}, "route without a dst"),
    "route bad dst": ({"routes": [{"dst": "default"}]}, "not a network"),
    "route bad gw": ({"routes": [{"dst": "0.0.0.0/0", "gw": "gateway"}]}, "not an IP address"),
    "dns type": ({"dns": ["8.8.8.8"]}, "dns must be an object"),
    "dns servers": ({"dns": {"nameservers": "8.8.8.8"}}, "nameservers must be a list of strings"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_config_errors_name_the_key(name):
    ipam, message = BAD[name]
    with pytest.raises(CNIError) as info:
        IpamConfig.coerce(conf(ipam))
    assert info.value.code == 7
    assert info.value.msg.startswith("invalid ipam configuration: ")
    assert message in info.value.msg


def test_top_level_state_dir_must_be_absolute():
    with pytest.raises(CNIError, match="stateDir must be an absolute path"):
        IpamConfig.coerce(conf({}, stateDir="relative"))


def test_ipam_section_must_be_an_object():
    with pytest.raises(CNIError) as info:
        IpamConfig.from_sections(["vnet-ipam"])
    assert info.value.code == 7


def test_a_config_error_reaches_the_runtime_as_an_error_object(tmp_path):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}
    stdin = json.dumps(conf({"refreshSeconds": "soon", "stateDir": str(tmp_path)})).encode()
    out, code = dispatch.run(IpamPlugin(), env, stdin)
    err = json.loads(out)
    assert code == 1 and err["code"] == 7 and "refreshSeconds" in err["msg"]
    assert list(tmp_path.iterdir()) == []  # nothing written
