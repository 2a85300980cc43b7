"""Node commands find their node's state on their own and say what they read; no state is an
error (issue 13 #1); tables in a pipe are plain and never cut (#4)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from vnetcni.cli.main import app
from vnetcni.node import find
from vnetcni.plugins.endpoints import EndpointStore

runner = CliRunner()


def conflist(state_dir: str, name: str = "vnet") -> dict:
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "vnet", "bridge": "azure0", "stateDir": state_dir,
         "ipam": {"type": "vnet-ipam", "stateDir": state_dir}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}


def record(cid: str, ip: str, pod: str = "web-1") -> dict:
    return {"network": "vnet", "containerId": cid, "ifName": "eth0", "hostIfName": "azv0123456789a",
            "bridge": "azure0", "mac": "02:00:00:00:00:01", "ips": [ip], "gateway": "10.240.0.1",
            "routes": [], "dns": {}, "netns": "/run/netns/x", "podName": pod, "podNamespace": "shop",
            "created": "2026-11-22T00:00:00+00:00"}


@pytest.fixture
def node(tmp_path):
    """A node as `vnetctl install` leaves it: a conflist in a conf dir naming a state dir."""
    state, conf = tmp_path / "state", tmp_path / "net.d"
    state.mkdir()
    conf.mkdir()
    (conf / "05-other.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "x",
                                                        "plugins": [{"type": "bridge"}]}))
    (conf / "10-vnet.conflist").write_text(json.dumps(conflist(str(state))))
    return state, conf


def test_status_reads_the_state_the_installed_conflist_names(node):
    state, conf = node
    res = runner.invoke(app, ["status", "--cni-conf-dir", str(conf)])
    assert res.exit_code == 0, res.output
    assert f"state {state} (from conflist {conf}/10-vnet.conflist" in res.stdout
    data = json.loads(runner.invoke(app, ["status", "--cni-conf-dir", str(conf), "-o", "json"]).stdout)
    assert data["node"] == {"state_dir": str(state), "source": f"conflist {conf}/10-vnet.conflist; note: "
                            "05-other.conflist sorts before it, and runtimes use the first"}
    assert data["vnetd"]["running"] is False and data["endpoints"] == {"recorded": 0, "stale": 0, "tearing_down": 0}


def test_every_node_command_finds_the_node_and_says_so(node):
    state, conf = node
    EndpointStore(str(state)).put(record("c0ffee" * 10, "10.240.0.36/16"))
    for cmd in (["endpoints"], ["ipam"], ["gc", "--dry-run"], ["status"]):
        res = runner.invoke(app, cmd + ["--cni-conf-dir", str(conf)])
        assert res.exit_code == 0, (cmd, res.output)
        assert str(state) in res.output, cmd


@pytest.mark.parametrize("cmd", [["status"], ["endpoints"], ["ipam"], ["gc", "--dry-run"]])
def test_no_state_is_an_error(cmd, tmp_path):
    res = runner.invoke(app, cmd + ["--state-dir", str(tmp_path / "nonexistent")])
    assert res.exit_code == 3, res.output
    assert res.stderr.startswith(f"error: no vnet state at {tmp_path}/nonexistent")
    empty = tmp_path / "net.d"
    empty.mkdir()
    res = runner.invoke(app, cmd + ["--cni-conf-dir", str(empty)])
    assert res.exit_code == 3 and "no vnet network configuration in" in res.stderr and "hint: " in res.stderr


def test_the_default_conf_dir_is_searched(node, monkeypatch):
    state, conf = node
    monkeypatch.setattr(find, "DEFAULT_CNI_CONF_DIR", str(conf))
    monkeypatch.setattr(find, "from_simulated_node", lambda: None)
    found = find.find_node()
    assert found.state_dir == str(state) and found.source.startswith(f"conflist {conf}/10-vnet.conflist")


def test_nothing_found_names_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setattr(find, "DEFAULT_CNI_CONF_DIR", str(tmp_path))
    monkeypatch.setattr(find, "from_simulated_node", lambda: None)
    monkeypatch.setattr(find, "from_running_vnetd", lambda: None)
    with pytest.raises(find.NodeNotFound) as exc:
        find.find_node()
    assert str(tmp_path) in exc.value.message and "--state-dir" in exc.value.hint


def test_a_running_vnetd_names_its_state_dir(tmp_path, monkeypatch):
    """The vnetd of this network namespace, found through /proc (here: a stand-in named vnetd)."""
    import subprocess
    import sys

    fake = tmp_path / "vnetd"
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake), "--state-dir", str(tmp_path / "st")])
    try:
        import time

        deadline = time.monotonic() + 10
        found = None
        while time.monotonic() < deadline:
            found = find.from_running_vnetd()
            if found is not None and found.state_dir == str(tmp_path / "st"):
                break
            time.sleep(0.05)
        assert found is not None and found.state_dir == str(tmp_path / "st")
        assert found.source.startswith("the running vnetd (pid ")
    finally:
        proc.kill()
        proc.wait()


def test_tables_in_a_pipe_are_plain_and_never_cut(tmp_path):
    """CliRunner's stdout is not a terminal: the table is plain columns, full values, one per line."""
    long_pod = "a-very-long-pod-name-that-would-never-fit-a-narrow-column-0123456789"
    EndpointStore(str(tmp_path)).put(record("c0ffee" * 10, "10.240.0.36/16", long_pod))
    res = runner.invoke(app, ["endpoints", "--state-dir", str(tmp_path)], env={"COLUMNS": "40"})
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["POD", "CONTAINER", "ADDRESS", "HOST_IF", "NETNS"]
    row = [line for line in lines if long_pod in line]
    assert row and "10.240.0.36/16" in row[0] and "…" not in res.stdout and "│" not in res.stdout
    wide = runner.invoke(app, ["endpoints", "--state-dir", str(tmp_path), "-o", "wide"], env={"COLUMNS": "40"})
    assert "c0ffee" * 10 in wide.stdout and "02:00:00:00:00:01" in wide.stdout


def _fabric_status_data() -> dict:
    node = {"name": "node1", "netns": "vsim-x-node1", "primary": "10.240.0.4", "mac": "00:0d:3a:00:00:01",
            "secondaries": "10.240.0.5-34", "capacity": 30, "pods": 1,
            "pool": {"in use": 1, "free": 29, "cooling": 0, "quarantined": 0, "size": 30},
            "healthy": False, "problems": ["vnetd not listening on /run/vnet-sim/x/node1/state/vnetd.sock (no socket)"],
            "metadata": "answering", "vnetd": "vnetd not listening", "vnetdListening": False,
            "stateDir": "/run/vnet-sim/x/node1/state"}
    pod = {"pod": "default/a-pod-with-a-rather-long-name-0123456789", "node": "node1", "address": "10.240.0.5",
           "mac": "02:00:00:00:00:01", "hostInterface": "azv0123456789a", "containerId": "c0ffee", "netns": "n"}
    return {"name": "x", "subnet": "10.240.0.0/16", "gateway": "10.240.0.1", "fabricNetns": "vsim-x-fabric",
            "enforceSource": False, "vnetd": True, "metricsPort": None, "healthy": False,
            "problems": ["node1: " + node["problems"][0]], "nodes": [node], "pods": [pod], "counters": {}}


def test_fabric_status_respects_the_terminal_width_and_says_why(monkeypatch):
    import io

    from rich.console import Console

    from vnetcni.cli import common
    from vnetcni.sim import report

    buf = io.StringIO()
    term = Console(file=buf, width=70, force_terminal=True, color_system=None, emoji=False)
    monkeypatch.setattr(common, "interactive", lambda: True)
    monkeypatch.setattr(common, "console", lambda *a, **k: term)
    report.print_status(term, _fabric_status_data())
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 70, text
    assert "DEGRADED" in text and "vnetd not listening" in text and "fabric repair" in text
