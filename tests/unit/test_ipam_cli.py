"""vnetctl ipam / capacity: what an operator reads, and readable errors (no tracebacks)."""

from __future__ import annotations

import json
import os

import pytest
import typer
from typer.testing import CliRunner

from vnetcni.capture.errors import EXIT_BAD_INPUT
from vnetcni.cli import ipam_cmds
from vnetcni.cni.config import parse_netconf
from vnetcni.cni.invocation import Invocation
from vnetcni.ipam.metadata import render_interfaces, node_interface, render_node
from vnetcni.ipam.plugin import IpamPlugin
from vnetcni.ipam.sources import FakeMetadataSource

XML = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 66)])


@pytest.fixture
def cli():
    app = typer.Typer()
    ipam_cmds.register(app)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return run


@pytest.fixture
def busy_node(state_dir):
    """Two pods, one released (cooling), one quarantined after the metadata changed."""
    source = FakeMetadataSource(XML)
    now = [1_700_000_000.0]
    plugin = IpamPlugin(source_factory=lambda cfg: source, clock=lambda: now[0])
    conf = parse_netconf({"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet",
                          "ipam": {"type": "vnet-ipam", "stateDir": state_dir, "reuseCooldownSeconds": 1e9}})
    args = {"K8S_POD_NAME": "web-0", "K8S_POD_NAMESPACE": "shop"}
    for cid in ("aaaa", "bbbb", "cccc"):
        plugin.add(Invocation("ADD", cid, "/run/netns/x", "eth0", args=args), conf)
    plugin.delete(Invocation("DEL", "bbbb", "", "eth0"), conf)
    source.answer = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", [f"10.240.0.{i}" for i in range(37, 66)])
    now[0] += 60
    plugin.add(Invocation("ADD", "dddd", "/run/netns/x", "eth0"), conf)
    return state_dir


def test_ipam_json_lists_every_address_with_its_status(cli, busy_node):
    res = cli("ipam", "--state-dir", busy_node, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    by_addr = {row["address"]: row for row in data["addresses"]}
    assert by_addr["10.240.0.36"]["status"] == "quarantined" and by_addr["10.240.0.36"]["pod"] == "shop/web-0"
    assert by_addr["10.240.0.37"]["status"] == "cooling" and by_addr["10.240.0.37"]["owner"] == "vntnet/bbbb/eth0"
    assert by_addr["10.240.0.38"]["status"] == "in use" and by_addr["10.240.0.38"]["owner"] == "vntnet/cccc/eth0"
    assert data["counts"] == {"in_use": 2, "free": 26, "cooling": 1, "quarantined": 1}
    assert data["pool"]["subnet"] == "10.240.0.0/16" and data["pool"]["size"] == 29


def test_ipam_table(cli, busy_node):
    res = cli("ipam", "--state-dir", busy_node)
    assert res.exit_code == 0
    for text in ("10.240.0.0/16", "quarantined", "cooling", "in use", "shop/web-0", "2 in use, 26 free"):
        assert text in res.output


def test_ipam_on_an_empty_node(cli, state_dir):
    res = cli("ipam", "--state-dir", state_dir)
    assert res.exit_code == 0 and "no pool learned yet" in res.output


def test_ipam_rebuild(cli, busy_node):
    path = os.path.join(busy_node, "ipam.json")
    with open(path, "wb") as f:
        f.write(b"\x00\x00")
    for _ in range(2):  # reading has no side effects: the file stays where it is
        res = cli("ipam", "--state-dir", busy_node, "--json")
        assert res.exit_code == 1 and "left in place" in res.output and "Traceback" not in res.output
    assert os.path.exists(path) and not [n for n in os.listdir(busy_node) if ".corrupt-" in n]
    # No endpoint records beside ipam.json: nothing to rebuild from, so no rebuild without --force.
    res = cli("ipam", "--state-dir", busy_node, "--rebuild")
    assert res.exit_code == 1 and "refusing to rebuild" in res.output and "--force" in res.output
    assert "two pods with one address" in res.output and "Traceback" not in res.output
    assert os.path.exists(path)  # the refusal touched nothing
    res = cli("ipam", "--state-dir", busy_node, "--rebuild", "--force")
    assert res.exit_code == 0 and "WARNING: rebuilt without evidence" in res.output
    assert "no endpoints.json" in res.output and "ADD works again" in res.output
    assert json.loads(cli("ipam", "--state-dir", busy_node, "--json").stdout)["needs_rebuild"] == []


def test_force_needs_rebuild(cli, busy_node):
    res = cli("ipam", "--state-dir", busy_node, "--force")
    assert res.exit_code == EXIT_BAD_INPUT and "--force only goes with --rebuild" in res.output


def test_capacity_from_a_file(cli, tmp_path):
    path = tmp_path / "if.xml"
    path.write_bytes(XML)
    res = cli("capacity", "--metadata-file", str(path))
    assert res.exit_code == 0
    assert "30 secondary addresses" in res.output and "max-pods: 30" in res.output
    assert "hostNetwork pods do not need one" in res.output
    data = json.loads(cli("capacity", "--metadata-file", str(path), "--json").stdout)
    assert data["max_pods"] == data["secondary_addresses"] == 30


def test_capacity_of_a_chosen_nic(cli, tmp_path):
    path = tmp_path / "if.xml"
    path.write_bytes(render_interfaces([
        node_interface("000D3A000001", "10.240.0.0/16", "10.240.0.4", ["10.240.0.5", "10.240.0.6"]),
        node_interface("000D3A000002", "10.241.0.0/16", "10.241.0.4", ["10.241.0.5"], False)]))
    res = cli("capacity", "--metadata-file", str(path), "--mac", "00-0d-3a-00-00-02", "--json")
    assert json.loads(res.stdout)["max_pods"] == 1


@pytest.mark.parametrize("args,message,code", [
    (("--metadata-file", "/x", "--metadata-url", "http://127.0.0.1:9/"), "not both", 2),
    (("--metadata-file", "/nonexistent/if.xml"), "cannot read metadata file", 1),
    (("--metadata-file", "/etc/hostname", "--mac", "zz"), "not a MAC", 2),
])
def test_capacity_errors_are_readable(cli, args, message, code):
    res = cli("capacity", *args)
    assert res.exit_code == code and message in res.output and "Traceback" not in res.output
    assert res.output.startswith("error: ")


def test_capacity_defaults_to_the_platform_metadata_url_like_vnet_ipam(cli, monkeypatch):
    """No --metadata-url/--metadata-file: the URL vnet-ipam uses by default (never contacted here)."""
    from vnetcni.ipam import sources
    from vnetcni.ipam.config import DEFAULT_METADATA_URL

    asked = []

    class Recorded(sources.FakeMetadataSource):
        def __init__(self, url, timeout):
            asked.append(url)
            super().__init__(XML)

    monkeypatch.setattr(sources, "HttpMetadataSource", Recorded)
    res = cli("capacity", "-o", "json")
    assert res.exit_code == 0, res.output
    assert asked == [DEFAULT_METADATA_URL] and json.loads(res.stdout)["max_pods"] == 30


def test_metadata_serve_refuses_bad_arguments(cli, tmp_path):
    res = cli("metadata", "serve", "--listen", "localhost:80", "--interfaces", "/etc/hostname")
    assert res.exit_code == 2 and "IP address" in res.output
    res = cli("metadata", "serve", "--listen", "127.0.0.1:0", "--interfaces", str(tmp_path / "nope.xml"))
    assert res.exit_code == 3 and "is not a file" in res.output
