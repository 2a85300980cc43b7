"""One vocabulary for every vnetctl command (issue 13 #7, #8, #9): the same option names for the
same things, -o json on every command that prints data, snake_case JSON, --version, help without
<str>/<bool>, documented exit codes, one error style, and no traceback for any bad argument."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vnetcni.cli.common import snake_keys
from vnetcni.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
VNETCTL = str(Path(sys.executable).with_name("vnetctl"))


def _leaves(group=None, path=()):
    group = group or typer.main.get_command(app)
    for name, cmd in sorted(getattr(group, "commands", {}).items()):
        if getattr(cmd, "commands", None):
            yield from _leaves(cmd, path + (name,))
        else:
            yield path + (name,), cmd


LEAVES = list(_leaves())
NAMES = [" ".join(p) for p, _ in LEAVES]


def test_every_command_is_found():
    for expected in ("status", "endpoints", "ipam", "gc", "capture", "trace", "capacity", "version", "bench",
                     "demo", "fabric up", "fabric down", "fabric status", "fabric repair", "fabric list",
                     "fabric capacity", "pod add", "pod del", "pod list", "install", "metadata serve"):
        assert expected in NAMES


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=NAMES)
def test_help_has_no_python_type_names(path):
    res = runner.invoke(app, list(path) + ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert not re.search(r"<(str|bool|int|float)>", res.output), res.output


NODE_COMMANDS = {("status",), ("endpoints",), ("ipam",), ("gc",), ("capture",), ("trace",)}
BUILDS = {("fabric", "up"), ("fabric", "down"), ("demo",), ("bench",), ("install",)}  # a valid value does work


def _bad_values(path, cmd) -> list[list[str]]:
    """Bad arguments for one command: an unknown option, a non-number for each number option, an
    unknown output format, a fabric name that is not a name (or names no fabric), a node that does
    not exist, state and configuration directories that do not exist."""
    cases = [["--no-such-option"]]
    for param in cmd.params:
        opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if not opts or getattr(param, "is_flag", False) or opts[0] == "--help":
            continue
        opt = opts[0]
        kind = param.bare_type() if hasattr(param, "bare_type") else ""
        if kind in ("int", "float"):
            cases.append([opt, "not-a-number"])
        elif opt == "--output" and path != ("capture",):
            cases.append(["-o", "xml"])
        elif opt == "--fabric":
            cases.append([opt, "Bad_Name!"])
            if path not in BUILDS:
                cases.append([opt, "nosuch"])
        elif opt == "--state-dir" and path in NODE_COMMANDS:
            cases.append([opt, "/nonexistent/vnet-state"])
        elif opt == "--cni-conf-dir" and path in NODE_COMMANDS:
            cases.append([opt, "/nonexistent/net.d"])
        elif opt == "--node":
            cases.append([opt, "node9"])
    return cases


SAFE_EXTRA = {  # what a command needs before its bad argument is looked at
    ("capture",): ["web"], ("trace",): ["web", "--to", "10.0.0.1"],
    ("pod", "add"): ["web"], ("pod", "del"): ["web"], ("metadata", "serve"): ["--listen", "127.0.0.1:0",
                                                                                "--interfaces", "/nonexistent"],
    ("install",): ["--cni-bin-dir", "/nonexistent/bin"],
}


@pytest.mark.parametrize("path,cmd", LEAVES, ids=NAMES)
def test_bad_arguments_never_print_a_traceback(path, cmd, tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_SIM_ROOT", str(tmp_path / "sim"))
    monkeypatch.setenv("VNET_SIM_PREFIX", f"vnt{os.getpid()}x")
    for bad in _bad_values(path, cmd):
        if path == ("install",) and bad != ["--no-such-option"]:
            continue  # any other value would install
        args = list(path) + SAFE_EXTRA.get(path, []) + bad
        res = runner.invoke(app, args)
        assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.exception)
        assert "Traceback" not in res.output, (args, res.output)
        assert res.exit_code != 0, (args, res.output)
        assert any(line.startswith("error: ") for line in res.stderr.splitlines()), (args, res.stderr)
        if bad == ["--no-such-option"] or "not-a-number" in bad or bad == ["-o", "xml"] or "Bad_Name!" in bad:
            assert res.exit_code == 2, (args, res.output)
        if "nosuch" in bad or "node9" in bad:
            assert res.exit_code in (2, 3), (args, res.output)
    assert not os.path.exists("/nonexistent")


def test_usage_errors_in_a_real_process_are_one_line_and_exit_2():
    out = subprocess.run([VNETCTL, "fabric", "up", "--nodes", "x"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "╭" not in out.stderr
    assert "hint: see `vnetctl fabric up --help`" in out.stderr


def test_same_names_for_the_same_things():
    """--fabric for the fabric, --node for the node, --state-dir/--cni-conf-dir for the node's
    state, -o/--output for the format, everywhere they appear."""
    seen: dict[str, set[str]] = {}
    for path, cmd in LEAVES:
        for param in cmd.params:
            seen.setdefault(param.name, set()).add(tuple(sorted(getattr(param, "opts", []))))
    assert seen["fabric"] <= {("--fabric", "--name"), ("--fabric",)}
    assert all(opts == ("--node",) for opts in seen["node"]), seen["node"]
    assert seen["state_dir"] == {("--state-dir",)}
    output = {p for p in seen["output"]}
    assert ("--output", "-o") in output


DATA_COMMANDS = ["status", "endpoints", "ipam", "gc", "trace", "capacity", "version", "bench", "fabric up",
                 "fabric down", "fabric status", "fabric repair", "fabric list", "fabric capacity", "pod add",
                 "pod del", "pod list"]


@pytest.mark.parametrize("name", DATA_COMMANDS)
def test_every_command_that_prints_data_has_json(name):
    cmd = dict(zip(NAMES, (c for _, c in LEAVES)))[name]
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert {"-o", "--json"} <= opts, name


def test_version_flag_and_command():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith("vnet-cni ")
    data = json.loads(runner.invoke(app, ["version", "-o", "json"]).stdout)
    assert set(data) == {"version", "cni_versions"}


def test_json_keys_are_snake_case():
    data = snake_keys({"stateDir": "/x", "in use": 1, "fetchedAt": None, "ipv4_from": 2,
                       "nodes": [{"hostIfName": "azv1", "metadataUrl": "u"}],
                       "by_address": {"10.0.0.1": 1, "000D3A000001": 2, "default/web": 3}})
    assert data == {"state_dir": "/x", "in_use": 1, "fetched_at": None, "ipv4_from": 2,
                    "nodes": [{"host_if_name": "azv1", "metadata_url": "u"}],
                    "by_address": {"10.0.0.1": 1, "000D3A000001": 2, "default/web": 3}}


def test_exit_codes_are_documented():
    readme = (ROOT / "README.md").read_text()
    for code, meaning in ((0, "done"), (1, "failed"), (2, "bad input"), (3, "not found"), (4, "no permission"),
                          (5, "missing"), (8, "did not complete"), (9, "refused")):
        assert re.search(rf"\|\s*`?{code}`?\s*\|[^|\n]*{meaning}", readme, re.I), (code, meaning)


def test_defaults_agree_between_fabric_up_demo_and_the_plugin():
    """vnetd on by default for `fabric up` as for `demo`; the fabric's nodes use vnet-ipam's own
    reuse cooldown unless told otherwise (issue 13 #8)."""
    from vnetcni.ipam.config import DEFAULT_COOLDOWN_SECONDS, IpamConfig
    from vnetcni.sim import demo, fabric
    from vnetcni.sim.model import NodeRecord

    up = dict(zip(NAMES, (c for _, c in LEAVES)))["fabric up"]
    dm = dict(zip(NAMES, (c for _, c in LEAVES)))["demo"]
    default = {c: {p.name: p.default for p in cmd.params} for c, cmd in (("up", up), ("demo", dm))}
    assert default["up"]["vnetd"] is True and default["demo"]["vnetd"] is True
    assert fabric.FabricOptions().vnetd is True and demo.DemoOptions().vnetd is True
    node = NodeRecord(name="node1", netns="x", primary="10.240.0.4", mac="00:0d:3a:00:00:01", fabricPort="p",
                      stateDir="/run/x", conflist="/x", cniBinDir="/b", metadataUrl="http://127.0.0.1:1/",
                      metadataFile="/m", secondaries=[])
    conf = fabric.conflist_for(node, fabric.FabricOptions().reuse_cooldown)
    ipam = conf["plugins"][0]["ipam"]
    assert ipam.get("reuseCooldownSeconds", DEFAULT_COOLDOWN_SECONDS) == DEFAULT_COOLDOWN_SECONDS
    del IpamConfig


def test_oversized_pool_is_refused_up_front_with_the_real_limit(tmp_path, monkeypatch):
    """--ips-per-node 8000 would make a metadata answer vnet-ipam refuses: refused before anything
    is built, naming the metadata size cap and the most addresses that fit (issue 13 #9)."""
    from vnetcni.ipam.metadata import MAX_METADATA_BYTES
    from vnetcni.sim import fabric

    monkeypatch.setenv("VNET_SIM_ROOT", str(tmp_path / "sim"))
    with pytest.raises(ValueError) as exc:
        fabric.up(fabric.FabricOptions(name="toobig", nodes=1, ips_per_node=8000))
    msg = str(exc.value)
    assert f"limit of {MAX_METADATA_BYTES} bytes" in msg
    fit = int(re.search(r"at most (\d+) secondary addresses", msg).group(1))
    assert 3000 < fit < 8000
    fabric.check_metadata_size(fabric.plan_addresses("toobig", "10.240.0.0/16", 1, fit))  # the limit fits
    assert not (tmp_path / "sim" / "toobig").exists()
    res = runner.invoke(app, ["fabric", "up", "--fabric", "toobig", "--nodes", "1", "--ips-per-node", "8000"])
    assert res.exit_code == 2 and "at most" in res.stderr and "Traceback" not in res.output


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_fabric_up_as_non_root_says_so(tmp_path):
    env = dict(os.environ, VNET_SIM_ROOT=str(tmp_path / "sim"))
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", VNETCTL, "fabric", "up",
                          "--fabric", "nu5"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 4, out.stderr
    assert "needs root" in out.stderr and "hint: run it as root" in out.stderr and "Traceback" not in out.stderr


def test_ambiguous_pod_is_bad_input(tmp_path):
    """A pod name that matches two endpoints exits with the bad-input code (2), not 1."""
    from vnetcni.capture.endpoints import single_record
    from vnetcni.capture.errors import EXIT_BAD_INPUT, CaptureError
    from vnetcni.capture.resolve import locate

    recs = [{"podNamespace": "a", "podName": "web", "containerId": "c1", "ifName": "eth0"},
            {"podNamespace": "b", "podName": "web", "containerId": "c2", "ifName": "eth0"}]
    with pytest.raises(CaptureError) as exc:
        single_record(recs, "web")
    assert exc.value.exit_code == EXIT_BAD_INPUT
    del locate
