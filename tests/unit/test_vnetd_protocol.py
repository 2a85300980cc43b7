"""The vnetd wire format shared by the C front door, the Python client and the server."""

from __future__ import annotations

import pytest

from vnetcni.daemon import protocol


def test_request_round_trip_forwards_only_cni_variables():
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "K8S_POD_NAME=a;X=b=c", "PATH": "/bin", "HOME": "/root"}
    data = protocol.encode_request("vnet", env, b'{"cniVersion": "1.0.0"}\n\n', ns="1:2")
    plugin, ns, got, stdin = protocol.decode_request(data)
    assert (plugin, ns, stdin) == ("vnet", "1:2", b'{"cniVersion": "1.0.0"}\n\n')
    assert got == {"CNI_COMMAND": "ADD", "CNI_ARGS": "K8S_POD_NAME=a;X=b=c"}


def test_newline_in_a_variable_is_refused():
    with pytest.raises(protocol.ProtocolError):
        protocol.encode_request("vnet", {"CNI_ARGS": "a\nb"}, b"")


@pytest.mark.parametrize("data", [b"", b"VNET1\nvnet\n", b"HTTP/1.1\nx\ny\n\n", b"VNET1\nvnet\n1:2\nNOEQUALS\n\n"])
def test_malformed_requests(data):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request(data)


def test_responses():
    assert protocol.decode_response(protocol.encode_response(1, b'{"code": 7}')) == (b'{"code": 7}', 1)
    assert protocol.decode_response(protocol.encode_response(0, b"")) == (b"", 0)
    assert protocol.decode_response(protocol.FALLBACK) is None
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_response(b"garbage")
