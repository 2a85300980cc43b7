"""The vnetd wire format shared by the C front door, the Python client and the server."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from vnetcni.daemon import protocol
from vnetcni.daemon.pending import attachment_key


def test_request_round_trip_forwards_only_cni_variables():
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "K8S_POD_NAME=a;X=b=c", "PATH": "/bin", "HOME": "/root"}
    data = protocol.encode_request("vnet", env, b'{"cniVersion": "1.0.0"}\n\n', ns="1:2", timeout=2.5,
                                   pod_netns="fd")
    req = protocol.decode_request(data, received=100.0)
    assert (req.plugin, req.netns, req.stdin) == ("vnet", "1:2", b'{"cniVersion": "1.0.0"}\n\n')
    assert req.env == {"CNI_COMMAND": "ADD", "CNI_ARGS": "K8S_POD_NAME=a;X=b=c"}
    assert req.timeout == 2.5 and req.deadline == 102.5 and req.wants_fd and req.version == 2
    assert req.expired(102.5) and not req.expired(102.4)


def test_the_errno_of_an_unopenable_netns_travels():
    data = protocol.encode_request("vnet", {"CNI_NETNS": "/x"}, b"{}", ns="1:2", timeout=1, pod_netns="errno:2")
    req = protocol.decode_request(data)
    assert not req.wants_fd and req.netns_errno == 2


def test_version_1_requests_are_still_read():
    req = protocol.decode_request(b"VNET1\nvnet\n1:2\nCNI_COMMAND=DEL\n\n{}", received=5.0)
    assert (req.version, req.plugin, req.netns, req.env, req.stdin) == (1, "vnet", "1:2", {"CNI_COMMAND": "DEL"}, b"{}")
    assert req.deadline == 5.0 + protocol.V1_TIMEOUT_SECONDS and req.pod_netns == ""


def test_unknown_protocol_keys_are_ignored():
    req = protocol.decode_request(b"VNET2\nplugin=vnet\nnetns=1:2\ntimeout-ms=10\nfuture=x\n\n{}")
    assert req.timeout == 0.01


def test_newline_in_a_variable_is_refused():
    with pytest.raises(protocol.ProtocolError):
        protocol.encode_request("vnet", {"CNI_ARGS": "a\nb"}, b"", timeout=1)


@pytest.mark.parametrize("data", [
    b"", b"VNET1\nvnet\n", b"HTTP/1.1\nx\ny\n\n", b"VNET1\nvnet\n1:2\nNOEQUALS\n\n",
    b"VNET2\nplugin=vnet\nnetns=1:2\n\n", b"VNET2\nplugin=vnet\nnetns=1:2\ntimeout-ms=-1\n\n",
    b"VNET2\nplugin=vnet\nnetns=1:2\ntimeout-ms=0\n\n", b"VNET2\nplugin=vnet\ntimeout-ms=5\n\n",
    b"VNET2\nplugin=vnet\nnetns=1:2\ntimeout-ms=5\nnoequals\n\n",
])
def test_malformed_requests(data):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request(data)


def test_responses():
    assert protocol.decode_response(protocol.encode_response(1, b'{"code": 7}')) == (b'{"code": 7}', 1)
    assert protocol.decode_response(protocol.encode_response(0, b"")) == (b"", 0)
    assert protocol.decode_response(protocol.FALLBACK) is None
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_response(b"garbage")


def test_timeouts_round_like_the_c_front_door():
    assert protocol.timeout_ms(5) == 5000
    assert protocol.timeout_ms(0.0004) == 1
    assert protocol.timeout_ms(0.0015) == 2


@pytest.mark.parametrize("network,cid,ifname", [
    ("vnet", "abc123", "eth0"), ("", "", ""), ("caf\u00e9", "x" * 200, "net1"), (None, "c", "eth0"),
])
def test_the_c_front_door_names_a_pending_delete_like_vnetd(tmp_path, network, cid, ifname):
    import json

    from vnetcni.plugins.install import compile_front_door

    cc = shutil.which("cc") or shutil.which("gcc")
    door = tmp_path / "vnet"
    compile_front_door("vnet", None, door, cc)
    conf = {"cniVersion": "1.0.0", "type": "vnet"}
    if network is not None:
        conf["name"] = network
    env = {**os.environ, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname}
    out = subprocess.run([str(door), "--pending-key"], input=json.dumps(conf).encode(), env=env,
                         capture_output=True, check=True, timeout=10).stdout.decode().strip()
    assert out == attachment_key("vnet", network, cid, ifname)
