"""The CNI_* environment: what each verb requires, CNI_ARGS, container ids, interface names."""

from __future__ import annotations

import pytest

from vnetcni.cni.errors import CNIError, DECODE_FAILURE, INVALID_CONFIG, INVALID_ENV
from vnetcni.cni.invocation import (MAX_STDIN_BYTES, Invocation, decode_json_object, parse_cni_args,
                                    read_invocation)

FULL = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/vnt-p1", "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}


def env_for(verb: str, **changes: str | None) -> dict[str, str]:
    env = {"CNI_COMMAND": verb, **FULL}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def code_of(env: dict, stdin: bytes = b"") -> int:
    with pytest.raises(CNIError) as info:
        read_invocation(env, stdin)
    return info.value.code


def test_add_reads_every_variable():
    env = env_for("ADD", CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1")
    inv = read_invocation(env, b"{}")
    assert inv == Invocation("ADD", "c1", "/run/netns/vnt-p1", "eth0",
                             {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "shop", "K8S_POD_NAME": "web-1"},
                             ("/opt/cni/bin", "/usr/lib/cni"), b"{}")
    assert inv.pod_name == "web-1" and inv.pod_namespace == "shop" and inv.ignore_unknown


@pytest.mark.parametrize("verb, missing", [
    ("ADD", "CNI_CONTAINERID"), ("ADD", "CNI_NETNS"), ("ADD", "CNI_IFNAME"),
    ("CHECK", "CNI_CONTAINERID"), ("CHECK", "CNI_NETNS"), ("CHECK", "CNI_IFNAME"),
    ("DEL", "CNI_CONTAINERID"), ("DEL", "CNI_IFNAME"),
    ("GC", "CNI_PATH"),
])
def test_each_verb_names_what_it_misses(verb, missing):
    for absent in (None, ""):  # unset and set-but-empty are the same to the spec
        with pytest.raises(CNIError) as info:
            read_invocation(env_for(verb, **{missing: absent}))
        assert info.value.code == INVALID_ENV and missing in info.value.msg


@pytest.mark.parametrize("verb", ["VERSION", "STATUS", "GC"])
def test_verbs_without_a_container_need_no_container_variables(verb):
    env = {"CNI_COMMAND": verb, "CNI_PATH": "/opt/cni/bin"}
    inv = read_invocation(env)
    assert inv.command == verb and inv.container_id == "" and inv.ifname == ""


def test_del_accepts_an_empty_netns():
    """containerd's second DEL, on sandbox removal, sends CNI_NETNS=""."""
    assert read_invocation(env_for("DEL", CNI_NETNS="")).netns == ""
    assert read_invocation(env_for("DEL", CNI_NETNS=None)).netns == ""


@pytest.mark.parametrize("command", ["", "add", "GET", "INIT", "DELETE", " ADD"])
def test_unknown_or_missing_verb_is_invalid_env(command):
    assert code_of(env_for("ADD", CNI_COMMAND=command)) == INVALID_ENV


@pytest.mark.parametrize("ifname", [".", "..", "eth0/1", "eth:0", "eth 0", "eth\t0", "eth0\n",
                                    "eth\u00a00", "a" * 16, "\u00e9" * 8, "eth\udcff" * 4])
def test_bad_interface_names_are_invalid_env(ifname):
    assert code_of(env_for("ADD", CNI_IFNAME=ifname)) == INVALID_ENV


@pytest.mark.parametrize("ifname", ["eth0", "a" * 15, "net-1_x.y", "\u00e9" * 7])
def test_linux_interface_names_are_accepted(ifname):
    assert read_invocation(env_for("ADD", CNI_IFNAME=ifname)).ifname == ifname


@pytest.mark.parametrize("cid", ["-c1", "_c1", ".c1", "c1/../x", "c 1", "c1;rm", "\u00e9t\u00e9"])
def test_bad_container_ids_are_invalid_env(cid):
    assert code_of(env_for("DEL", CNI_CONTAINERID=cid)) == INVALID_ENV


def test_container_ids_runtimes_send_are_accepted():
    cid = "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755"
    assert read_invocation(env_for("ADD", CNI_CONTAINERID=cid)).container_id == cid
    assert read_invocation(env_for("ADD", CNI_CONTAINERID="vnt-pod_1.a")).container_id == "vnt-pod_1.a"


def test_oversized_input_is_refused_but_version_ignores_stdin():
    big = b" " * (MAX_STDIN_BYTES + 1)
    assert code_of(env_for("ADD"), big) == DECODE_FAILURE
    assert read_invocation({"CNI_COMMAND": "VERSION"}, big).command == "VERSION"


@pytest.mark.parametrize("raw, expected", [
    ("", {}),
    ("IgnoreUnknown=1", {"IgnoreUnknown": "1"}),
    ("K8S_POD_NAME=web;IgnoreUnknown=true;K8S_POD_NAMESPACE=shop",
     {"K8S_POD_NAME": "web", "IgnoreUnknown": "true", "K8S_POD_NAMESPACE": "shop"}),
    ("A=1;;B=;", {"A": "1", "B": ""}),
    ("A=1;A=2", {"A": "2"}),
    ("TOKEN=abc==", {"TOKEN": "abc=="}),
])
def test_cni_args_in_any_order(raw, expected):
    assert parse_cni_args(raw) == expected


@pytest.mark.parametrize("raw", ["novalue", "=v", "A=1;junk", ";=;"])
def test_bad_cni_args_are_invalid_env(raw):
    with pytest.raises(CNIError) as info:
        parse_cni_args(raw)
    assert info.value.code == INVALID_ENV
    assert code_of(env_for("ADD", CNI_ARGS=raw)) == INVALID_ENV


def test_ignore_unknown_is_read_loosely():
    assert Invocation("ADD", args={"IgnoreUnknown": "TRUE"}).ignore_unknown
    assert not Invocation("ADD", args={"IgnoreUnknown": "0"}).ignore_unknown
    assert not Invocation("ADD").ignore_unknown


def test_to_env_reproduces_the_invocation():
    inv = read_invocation(env_for("ADD", CNI_ARGS="B=2;A=1"), b"x")
    assert read_invocation(inv.to_env(), b"x") == inv
    deleted = inv.replace(command="DEL", netns="")
    assert read_invocation(deleted.to_env(), b"x") == deleted


def test_invocation_is_frozen():
    inv = Invocation("ADD", "c1")
    with pytest.raises(AttributeError):
        inv.command = "DEL"  # type: ignore[misc]
    with pytest.raises(TypeError):
        inv.replace(no_such_field=1)
    assert inv.replace(ifname="eth1").ifname == "eth1" and inv.ifname == ""


@pytest.mark.parametrize("data, code", [
    (b"", DECODE_FAILURE), (b"  \n", DECODE_FAILURE), (b"{nope", DECODE_FAILURE),
    (b'{"a": NaN}', DECODE_FAILURE), (b'{"a": -Infinity}', DECODE_FAILURE),
    (b'{"a": "\xff"}', DECODE_FAILURE), (b"\xef\xbb\xbf{}", DECODE_FAILURE),
    (b"[" * 100_000 + b"]" * 100_000, DECODE_FAILURE), (b'{"n": ' + b"9" * 5000 + b"}", DECODE_FAILURE),
    (b"[]", INVALID_CONFIG), (b'"x"', INVALID_CONFIG), (b"null", INVALID_CONFIG), (b"1", INVALID_CONFIG),
])
def test_decode_json_object_refuses_everything_but_an_object(data, code):
    with pytest.raises(CNIError) as info:
        decode_json_object(data)
    assert info.value.code == code


def test_decode_json_object_reads_str_and_bytes():
    assert decode_json_object('{"a": 1}') == decode_json_object(b'{"a": 1}') == {"a": 1}


def test_frozen_records_copy_and_pickle():
    import copy
    import pickle

    from vnetcni.cni.config import parse_conflist, parse_netconf

    inv = Invocation("ADD", "c1", "/run/netns/vnt-p1", "eth0", {"A": "1"}, ("/opt/cni/bin",), b"{}")
    conf = parse_netconf({"cniVersion": "1.0.0", "name": "n", "type": "t"})
    cl = parse_conflist({"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "t"}], "disableGC": True})
    for value in (inv, conf, cl):
        assert copy.deepcopy(value) == value == pickle.loads(pickle.dumps(value))
        assert copy.copy(value) == value
