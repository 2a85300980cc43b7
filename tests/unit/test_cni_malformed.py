"""A corpus of malformed invocations, fed to dispatch.run and to a real plugin process.

Whatever the runtime sends, the answer is exactly one well-formed error object on stdout with the
right code and a non-zero exit: no traceback, no stray output (the tiny plugin below prints to
stdout from Python, from the fd and from a child process on purpose).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vnetcni.cni import dispatch
from vnetcni.cni.errors import (DECODE_FAILURE, INCOMPATIBLE_VERSION, INTERNAL, INVALID_CONFIG,
                                INVALID_ENV, PLUGIN_NOT_AVAILABLE)
from vnetcni.cni.invocation import MAX_STDIN_BYTES
from vnetcni.cni.result import IPConfig, Result

SRC = Path(__file__).resolve().parents[2] / "src"
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/vnt-p1",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
GOOD = {"cniVersion": "1.0.0", "name": "vnt-net", "type": "tiny"}
ERROR_KEYS = {"cniVersion", "code", "msg", "details"}

TINY_PLUGIN = textwrap.dedent("""
    import os, subprocess, sys
    sys.path.insert(0, {src!r})
    from vnetcni.cni import dispatch
    from vnetcni.cni.errors import CNIError
    from vnetcni.cni.result import IPConfig, Result

    def noise(where):
        print("print() noise from", where)        # Python-level stdout
        os.write(1, b"fd-level noise\\n")          # straight to file descriptor 1
        subprocess.run(["echo", "child noise"])  # a child inheriting stdout

    class Tiny(dispatch.Plugin):
        def add(self, inv, conf):
            noise("ADD")
            conf.port_mappings()
            if conf.get("crash"):
                raise RuntimeError("simulated bug")
            if conf.get("fail"):
                raise CNIError(100, "no address available", "30 of 30 in use")
            return Result(ips=[IPConfig("10.240.0.36/16", "10.240.0.1")])

        def delete(self, inv, conf):
            noise("DEL")

        def check(self, inv, conf):
            noise("CHECK")

        def status(self, inv, conf):
            noise("STATUS")
            if conf.get("fail"):
                raise CNIError(50, "vnetd is not running")

    sys.exit(dispatch.main(Tiny()))
""")


class Tiny(dispatch.Plugin):
    """The same plugin, in-process."""

    def add(self, inv, conf):
        conf.port_mappings()
        return Result(ips=[IPConfig("10.240.0.36/16", "10.240.0.1")])

    def delete(self, inv, conf):
        pass

    def check(self, inv, conf):
        pass


def js(obj) -> bytes:
    return json.dumps(obj).encode()


def nested(depth: int) -> bytes:
    return b'{"cniVersion": "1.0.0", "name": "n", "type": "t", "x": ' + b"[" * depth + b"]" * depth + b"}"


def env(**changes) -> dict:
    out = dict(ENV)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


# (id, environment, stdin, expected code)
CORPUS = [
    # the configuration on stdin
    ("invalid-json", env(), b"{nope", DECODE_FAILURE),
    ("truncated-json", env(), js(GOOD)[:-3], DECODE_FAILURE),
    ("empty-stdin", env(), b"", DECODE_FAILURE),
    ("whitespace-stdin", env(), b" \n\t", DECODE_FAILURE),
    ("nan", env(), b'{"cniVersion": "1.0.0", "name": "n", "type": "t", "mtu": NaN}', DECODE_FAILURE),
    ("invalid-utf8", env(), b'{"cniVersion": "1.0.0", "name": "\xff\xfe", "type": "t"}', DECODE_FAILURE),
    ("utf16", env(), json.dumps(GOOD).encode("utf-16"), DECODE_FAILURE),
    ("nul-bytes", env(), b"\0" * 64, DECODE_FAILURE),
    ("oversized", env(), js({**GOOD, "pad": "x" * MAX_STDIN_BYTES}), DECODE_FAILURE),
    ("deeply-nested", env(), nested(200_000), DECODE_FAILURE),
    ("nested-past-recursion-limit", env(), nested(5_000), DECODE_FAILURE),
    ("config-array", env(), b"[1, 2]", INVALID_CONFIG),
    ("config-string", env(), b'"cniVersion"', INVALID_CONFIG),
    ("config-null", env(), b"null", INVALID_CONFIG),
    ("missing-cniversion", env(), js({"name": "n", "type": "t"}), INVALID_CONFIG),
    ("numeric-cniversion", env(), js({**GOOD, "cniVersion": 1.0}), INVALID_CONFIG),
    ("malformed-cniversion", env(), js({**GOOD, "cniVersion": "1.0"}), INVALID_CONFIG),
    ("unsupported-old-version", env(), js({**GOOD, "cniVersion": "0.2.0"}), INCOMPATIBLE_VERSION),
    ("unsupported-new-version", env(), js({**GOOD, "cniVersion": "1.2.0"}), INCOMPATIBLE_VERSION),
    ("missing-name", env(), js({"cniVersion": "1.0.0", "type": "t"}), INVALID_CONFIG),
    ("bad-name", env(), js({**GOOD, "name": "bad/name"}), INVALID_CONFIG),
    ("missing-type", env(), js({"cniVersion": "1.0.0", "name": "n"}), INVALID_CONFIG),
    ("ipam-not-object", env(), js({**GOOD, "ipam": "vnet-ipam"}), INVALID_CONFIG),
    ("prevresult-array", env(), js({**GOOD, "prevResult": []}), INVALID_CONFIG),
    ("prevresult-string", env(), js({**GOOD, "prevResult": "{}"}), INVALID_CONFIG),
    ("prevresult-bad-ips", env(), js({**GOOD, "prevResult": {"ips": [{"address": "x"}]}}), INVALID_CONFIG),
    ("prevresult-old-version", env(), js({**GOOD, "prevResult": {"cniVersion": "0.2.0"}}),
     INCOMPATIBLE_VERSION),
    ("runtimeconfig-array", env(), js({**GOOD, "runtimeConfig": []}), INVALID_CONFIG),
    ("portmappings-not-list", env(), js({**GOOD, "runtimeConfig": {"portMappings": 80}}), INVALID_CONFIG),
    ("portmapping-bad-port", env(),
     js({**GOOD, "runtimeConfig": {"PortMappings": [{"HostPort": "x", "ContainerPort": 80}]}}), INVALID_CONFIG),
    # the environment
    ("no-command", env(CNI_COMMAND=None), js(GOOD), INVALID_ENV),
    ("lowercase-command", env(CNI_COMMAND="add"), js(GOOD), INVALID_ENV),
    ("unknown-command", env(CNI_COMMAND="INIT"), js(GOOD), INVALID_ENV),
    ("add-no-containerid", env(CNI_CONTAINERID=None), js(GOOD), INVALID_ENV),
    ("add-no-netns", env(CNI_NETNS=""), js(GOOD), INVALID_ENV),
    ("add-no-ifname", env(CNI_IFNAME=None), js(GOOD), INVALID_ENV),
    ("check-no-netns", env(CNI_COMMAND="CHECK", CNI_NETNS=None), js(GOOD), INVALID_ENV),
    ("del-no-containerid", env(CNI_COMMAND="DEL", CNI_CONTAINERID=""), js(GOOD), INVALID_ENV),
    ("del-no-ifname", env(CNI_COMMAND="DEL", CNI_IFNAME=None), js(GOOD), INVALID_ENV),
    ("gc-no-path", env(CNI_COMMAND="GC", CNI_PATH=None), js({**GOOD, "cniVersion": "1.1.0"}), INVALID_ENV),
    ("cni-args-no-equals", env(CNI_ARGS="K8S_POD_NAME"), js(GOOD), INVALID_ENV),
    ("cni-args-empty-key", env(CNI_ARGS="IgnoreUnknown=1;=x"), js(GOOD), INVALID_ENV),
    ("bad-containerid", env(CNI_CONTAINERID="../etc"), js(GOOD), INVALID_ENV),
    ("ifname-too-long", env(CNI_IFNAME="eth0123456789012"), js(GOOD), INVALID_ENV),
    ("ifname-slash", env(CNI_IFNAME="eth/0"), js(GOOD), INVALID_ENV),
    ("ifname-colon", env(CNI_IFNAME="eth0:1"), js(GOOD), INVALID_ENV),
    ("ifname-space", env(CNI_IFNAME="eth 0"), js(GOOD), INVALID_ENV),
    ("ifname-dot", env(CNI_IFNAME="."), js(GOOD), INVALID_ENV),
    ("ifname-dotdot", env(CNI_IFNAME=".."), js(GOOD), INVALID_ENV),
    # verbs against versions
    ("check-0.3.1", env(CNI_COMMAND="CHECK"), js({**GOOD, "cniVersion": "0.3.1"}), INCOMPATIBLE_VERSION),
    ("status-1.0.0", env(CNI_COMMAND="STATUS"), js(GOOD), INCOMPATIBLE_VERSION),
    ("gc-1.0.0", env(CNI_COMMAND="GC"), js(GOOD), INCOMPATIBLE_VERSION),
    ("gc-bad-attachments", env(CNI_COMMAND="GC"),
     js({**GOOD, "cniVersion": "1.1.0", "cni.dev/valid-attachments": {"c1": "eth0"}}), INVALID_CONFIG),
]
IDS = [case[0] for case in CORPUS]


def assert_error_object(stdout: bytes, expected_code: int) -> dict:
    assert b"Traceback" not in stdout
    err = json.loads(stdout.decode("utf-8"))  # one JSON document, nothing before or after it
    assert isinstance(err, dict) and set(err) <= ERROR_KEYS
    assert {"cniVersion", "code", "msg"} <= set(err)
    assert isinstance(err["msg"], str) and err["msg"]
    assert err["code"] == expected_code, err
    return err


@pytest.mark.parametrize("case_id, environ, stdin, code", CORPUS, ids=IDS)
def test_run_answers_malformed_input_with_an_error_object(case_id, environ, stdin, code):
    out, exit_code = dispatch.run(Tiny(), environ, stdin)
    assert exit_code != 0
    assert_error_object(out, code)


@pytest.fixture(scope="module")
def tiny_plugin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vnt-cni-plugin") / "tiny"
    path.write_text(TINY_PLUGIN.format(src=str(SRC)))
    return path


def run_plugin(plugin: Path, environ: dict, stdin: bytes) -> subprocess.CompletedProcess:
    # -I -S: how the installed front door starts, isolated from the caller's Python settings.
    return subprocess.run([sys.executable, "-I", "-S", str(plugin)], input=stdin,
                          env={"PATH": "/usr/bin:/bin", **environ}, capture_output=True, timeout=60)


@pytest.mark.parametrize("case_id, environ, stdin, code", CORPUS, ids=IDS)
def test_plugin_process_prints_only_the_error_object(tiny_plugin, case_id, environ, stdin, code):
    proc = run_plugin(tiny_plugin, environ, stdin)
    assert proc.returncode == 1, proc.stderr
    assert_error_object(proc.stdout, code)
    assert b"Traceback" not in proc.stderr  # bad input is not a crash


@pytest.mark.parametrize("verb, extra", [("ADD", {}), ("CHECK", {}), ("DEL", {"CNI_NETNS": ""}),
                                         ("STATUS", {}), ("VERSION", {})])
def test_plugin_process_noise_never_reaches_stdout(tiny_plugin, verb, extra):
    version = "1.1.0"
    proc = run_plugin(tiny_plugin, {**ENV, "CNI_COMMAND": verb, **extra},
                      js({**GOOD, "cniVersion": version}))
    assert proc.returncode == 0, proc.stderr
    if verb == "ADD":
        assert json.loads(proc.stdout)["ips"] == [{"address": "10.240.0.36/16", "gateway": "10.240.0.1"}]
    elif verb == "VERSION":
        assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    else:
        assert proc.stdout == b""
    if verb not in ("VERSION",):
        assert b"print() noise" in proc.stderr and b"fd-level noise" in proc.stderr
        assert b"child noise" in proc.stderr


@pytest.mark.parametrize("fields, verb, code", [({"fail": True}, "ADD", 100),
                                                ({"fail": True}, "STATUS", PLUGIN_NOT_AVAILABLE),
                                                ({"crash": True}, "ADD", INTERNAL)])
def test_plugin_process_reports_handler_failures(tiny_plugin, fields, verb, code):
    proc = run_plugin(tiny_plugin, {**ENV, "CNI_COMMAND": verb}, js({**GOOD, "cniVersion": "1.1.0", **fields}))
    assert proc.returncode == 1
    err = assert_error_object(proc.stdout, code)
    assert err["cniVersion"] == "1.1.0"
    if code == INTERNAL:
        assert b"Traceback" in proc.stderr and b"simulated bug" in proc.stderr  # for the operator


def test_plugin_process_with_stdin_closed(tiny_plugin):
    proc = subprocess.run([sys.executable, "-I", "-S", str(tiny_plugin)], stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", **ENV}, capture_output=True, timeout=60)
    assert proc.returncode == 1
    assert_error_object(proc.stdout, DECODE_FAILURE)


def test_importing_the_contract_stays_cheap():
    """The plugin start-up path loads no heavy module (see cni/_record.py for the numbers)."""
    code = ("import sys; sys.path.insert(0, %r); import vnetcni.cni.dispatch, vnetcni.cni.exec; "
            "print(' '.join(sorted(sys.modules)))" % str(SRC))
    loaded = set(subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True,
                                check=True, timeout=60).stdout.split())
    heavy = {"dataclasses", "typing", "inspect", "ast", "subprocess", "ipaddress", "threading",
             "pyroute2", "typer", "rich", "prometheus_client", "asyncio", "logging"}
    assert "vnetcni.cni.dispatch" in loaded and not loaded & heavy, loaded & heavy
