"""Verb dispatch: per-verb version rules, what reaches the handlers, and what is printed."""

from __future__ import annotations

import json

import pytest

from vnetcni.cni import dispatch, versions
from vnetcni.cni.errors import (CNIError, INCOMPATIBLE_VERSION, INTERNAL, INVALID_CONFIG,
                                LIMITED_CONNECTIVITY, PLUGIN_NOT_AVAILABLE)
from vnetcni.cni.result import Interface, IPConfig, Result, Route

ENV = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/vnt-p1", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin"}
PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/vnt-p1"}],
        "ips": [{"address": "10.240.0.36/16", "gateway": "10.240.0.1", "interface": 0}]}


class Recorder(dispatch.Plugin):
    """Records each call; ADD answers with a fixed result (or whatever `answer` holds)."""

    def __init__(self, answer=None, fail: CNIError | None = None) -> None:
        self.calls: list[tuple] = []
        self.answer = answer
        self.fail = fail

    def _record(self, *call):
        self.calls.append(call)
        if self.fail:
            raise self.fail

    def add(self, inv, conf):
        self._record("ADD", inv, conf)
        if self.answer is not None:
            return self.answer
        return Result(interfaces=[Interface("eth0", "aa:bb:cc:dd:ee:ff", inv.netns, mtu=1500)],
                      ips=[IPConfig("10.240.0.36/16", "10.240.0.1", 0)],
                      routes=[Route("0.0.0.0/0", "10.240.0.1", table=5)])

    def delete(self, inv, conf):
        self._record("DEL", inv, conf)

    def check(self, inv, conf):
        self._record("CHECK", inv, conf)

    def status(self, inv, conf):
        self._record("STATUS", inv, conf)

    def gc(self, inv, conf, valid):
        self._record("GC", inv, conf, valid)


def conf(version="1.0.0", **fields) -> bytes:
    return json.dumps({"cniVersion": version, "name": "vnt-net", "type": "tiny", **fields}).encode()


def call(plugin, verb, stdin, **env_changes):
    env = {"CNI_COMMAND": verb, **ENV, **env_changes}
    out, code = dispatch.run(plugin, env, stdin)
    return code, (json.loads(out) if out else None)


def assert_error(code, answer, expected_code, version=versions.LATEST):
    assert code == 1
    assert set(answer) <= {"cniVersion", "code", "msg", "details"}
    assert answer["code"] == expected_code and answer["msg"] and answer["cniVersion"] == version


@pytest.mark.parametrize("stdin", [b"", conf("0.4.0"), b"{garbage", b"\xff", conf("7.0.0"),
                                   b'{"cniVersion": "1.1.0"}'])
def test_version_answers_whatever_stdin_holds(stdin):
    code, answer = call(None, "VERSION", stdin)
    assert code == 0
    assert answer["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    assert answer["cniVersion"] in versions.SUPPORTED_VERSIONS


def test_version_answers_in_the_requested_version():
    assert call(None, "VERSION", conf("0.4.0"))[1]["cniVersion"] == "0.4.0"
    assert call(None, "VERSION", b"")[1]["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("version", versions.SUPPORTED_VERSIONS)
def test_add_answers_in_the_version_it_was_asked_for(version):
    code, res = call(Recorder(), "ADD", conf(version))
    assert code == 0 and res["cniVersion"] == version
    assert ("version" in res["ips"][0]) == (version in ("0.3.0", "0.3.1", "0.4.0"))
    assert ("mtu" in res["interfaces"][0]) == (version == "1.1.0")
    assert ("table" in res["routes"][0]) == (version == "1.1.0")


def test_add_may_return_a_result_dict_of_any_version():
    code, res = call(Recorder(answer=dict(PREV, cniVersion="0.4.0", ips=[dict(PREV["ips"][0], version="4")])),
                     "ADD", conf("1.1.0"))
    assert code == 0 and res["cniVersion"] == "1.1.0" and "version" not in res["ips"][0]


def test_add_handler_returning_junk_is_an_internal_error():
    code, res = call(Recorder(answer=42), "ADD", conf())
    assert_error(code, res, INTERNAL, "1.0.0")


def test_chained_add_refuses_an_unreadable_prev_result():
    plugin = Recorder()
    code, res = call(plugin, "ADD", conf(prevResult={"ips": [{"address": "nope"}]}))
    assert_error(code, res, INVALID_CONFIG, "1.0.0")
    assert plugin.calls == []


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1"])
def test_check_before_0_4_0_is_incompatible(version):
    plugin = Recorder()
    code, res = call(plugin, "CHECK", conf(version, prevResult=PREV))
    assert_error(code, res, INCOMPATIBLE_VERSION, version)
    assert plugin.calls == []


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_from_0_4_0_reaches_the_handler_with_prev_result(version):
    plugin = Recorder()
    assert call(plugin, "CHECK", conf(version, prevResult=PREV)) == (0, None)
    (verb, inv, netconf), = plugin.calls
    assert verb == "CHECK" and netconf.previous_result().ips[0].address == "10.240.0.36/16"


@pytest.mark.parametrize("verb", ["STATUS", "GC"])
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_status_and_gc_need_1_1_0(verb, version):
    plugin = Recorder()
    code, res = call(plugin, verb, conf(version))
    assert_error(code, res, INCOMPATIBLE_VERSION, version)
    assert plugin.calls == []


def test_del_accepts_empty_netns_and_no_prev_result():
    plugin = Recorder()
    assert call(plugin, "DEL", conf("1.0.0"), CNI_NETNS="") == (0, None)
    assert call(plugin, "DEL", conf("0.3.1")) == (0, None)
    (_, inv, netconf), _ = plugin.calls
    assert inv.netns == "" and netconf.prev_result is None


def test_del_leaves_a_strange_prev_result_to_the_handler():
    """DEL is best effort: an odd prevResult must not stop the cleanup."""
    plugin = Recorder()
    assert call(plugin, "DEL", conf(prevResult={"ips": "??"})) == (0, None)
    assert len(plugin.calls) == 1


def test_status_errors_reach_the_runtime():
    for code_wanted in (PLUGIN_NOT_AVAILABLE, LIMITED_CONNECTIVITY):
        plugin = Recorder(fail=CNIError(code_wanted, "vnetd is not running", "start it"))
        code, res = call(plugin, "STATUS", conf("1.1.0"), CNI_CONTAINERID="", CNI_IFNAME="")
        assert_error(code, res, code_wanted, "1.1.0")
        assert res["details"] == "start it"


def test_status_and_gc_default_to_ready_and_nothing_to_collect():
    class Minimal:  # duck typing: only what it needs
        def add(self, inv, conf):
            return Result()

    assert call(Minimal(), "STATUS", conf("1.1.0")) == (0, None)
    assert call(Minimal(), "GC", conf("1.1.0")) == (0, None)


@pytest.mark.parametrize("key", dispatch.VALID_ATTACHMENTS_KEYS)
def test_gc_hands_over_the_valid_attachments(key):
    valid = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]
    plugin = Recorder()
    assert call(plugin, "GC", conf("1.1.0", **{key: valid}), CNI_CONTAINERID="") == (0, None)
    assert plugin.calls[0][3] == valid


def test_gc_without_attachments_means_none_are_valid():
    plugin = Recorder()
    assert call(plugin, "GC", conf("1.1.0")) == (0, None)
    assert plugin.calls[0][3] == []


@pytest.mark.parametrize("valid", [{}, "c1", [["c1", "eth0"]], [{"containerID": "c1"}],
                                   [{"containerID": 1, "ifname": "eth0"}]])
def test_gc_refuses_malformed_attachments(valid):
    plugin = Recorder()
    code, res = call(plugin, "GC", conf("1.1.0", **{"cni.dev/valid-attachments": valid}))
    assert_error(code, res, INVALID_CONFIG, "1.1.0")
    assert plugin.calls == []


def test_handler_errors_are_printed_in_the_config_version():
    plugin = Recorder(fail=CNIError(100, "no address available", "30 of 30 in use"))
    code, res = call(plugin, "ADD", conf("0.4.0"))
    assert code == 1
    assert res == {"cniVersion": "0.4.0", "code": 100, "msg": "no address available",
                   "details": "30 of 30 in use"}


def test_a_bug_in_a_handler_is_an_internal_error_not_a_traceback(capsys):
    class Buggy(Recorder):
        def add(self, inv, conf):
            return {}["missing"]

    out, code = dispatch.run(Buggy(), {"CNI_COMMAND": "ADD", **ENV}, conf())
    assert code == 1 and json.loads(out)["code"] == INTERNAL
    assert b"Traceback" not in out and "KeyError" in json.loads(out)["msg"]
    assert "Traceback" in capsys.readouterr().err  # the operator still gets it, on stderr


def test_plugin_base_requires_the_container_verbs():
    class Half(dispatch.Plugin):
        def add(self, inv, conf):
            return Result()

    with pytest.raises(TypeError):
        Half()  # type: ignore[abstract]


def test_handle_is_usable_on_its_own():
    inv = dispatch.read_invocation({"CNI_COMMAND": "ADD", **ENV}, conf("0.3.1"))
    assert dispatch.handle(Recorder(), inv)["cniVersion"] == "0.3.1"
    with pytest.raises(CNIError):
        dispatch.handle(Recorder(), inv.replace(stdin=b"{"))
