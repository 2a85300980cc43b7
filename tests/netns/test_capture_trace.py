"""`vnetctl trace` on a hand-made two-node VNet (the same shape `vnetctl fabric up` builds):
every hop reported, the last hop a dropped flow was seen on, waiting for a flow, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import require_tool
from support.resources import process_table

from netns.test_capture_topology import (CliRun, add_pod, drop_ipv4_forwarded_to, make_fabric,
                                         run_cli, tcp_exchange)

HOPS = [("n1", "pod veth"), ("n1", "bridge"), ("n1", "uplink"), ("vnthand", "fabric port"),
        ("vnthand", "fabric port"), ("n2", "uplink"), ("n2", "bridge"), ("n2", "pod veth")]


@pytest.fixture
def vnet(namespaces, tmp_path):
    require_tool("tcpdump")
    require_tool("nft")
    fabric = make_fabric(namespaces, tmp_path)
    fabric.a = add_pod(namespaces, fabric.nodes[0], "web-a", "10.99.0.5")
    fabric.b = add_pod(namespaces, fabric.nodes[1], "web-b", "10.99.0.7")
    return fabric


def trace_json(vnet, *args: str):
    result = run_cli("trace", "web-a", "--fabric", vnet.path, "--json", *args)
    assert result.returncode in (0, 8, 9), result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("to", ["10.99.0.7:8080", "10.99.0.7"])
def test_trace_reports_every_hop_both_ways(vnet, to):
    code, report = trace_json(vnet, "--to", to)
    # Nothing listens on web-b:8080: reached, refused with a reset (exit 9), not delivered.
    assert code == (9 if ":" in to else 0)
    assert [(h["node"], h["role"]) for h in report["hops"]] == HOPS
    assert report["hops"][0]["interface"] == vnet.a.host_if
    assert report["hops"][-1]["interface"] == vnet.b.host_if
    assert all(h["forward"] >= 1 and h["reply"] >= 1 for h in report["hops"])
    assert report["complete"] is (":" not in to)
    assert report["status"] == ("refused" if ":" in to else "delivered")
    assert report["destination"] == {"address": "10.99.0.7", "port": 8080 if ":" in to else None,
                                     "pod": "default/web-b", "node": "n2"}
    if ":" in to:
        assert report["generated"]["result"] == "refused (RST)"
        assert all(h["forward_kinds"] == ["S"] and h["reply_kinds"] == ["RA"] for h in report["hops"])
        assert "nothing listens on :8080" in report["verdict"]
        table = run_cli("trace", "web-a", "--fabric", vnet.path, "--to", to)
        assert table.returncode == 9 and "R RST" in table.stdout  # the flag legend


def test_trace_finds_the_last_hop_before_a_drop(vnet):
    drop_ipv4_forwarded_to(vnet.nodes[1].netns_name, vnet.b.host_if)
    code, report = trace_json(vnet, "--to", "10.99.0.7:8080", "--timeout", "1.5")
    assert code == 8
    seen = [h["forward"] > 0 for h in report["hops"]]
    assert seen == [True] * 7 + [False]
    assert all(h["reply"] == 0 for h in report["hops"])
    assert report["last_seen"] == {"index": 6, "node": "n2", "interface": "azure0", "role": "bridge",
                                  "direction": "forward"}
    assert report["verdict"].startswith("lost after n2:azure0")
    table = run_cli("trace", "web-a", "--fabric", vnet.path, "--to", "10.99.0.7:8080",
                    "--timeout", "1")
    assert table.returncode == 8
    assert "◀ last seen (forward)" in table.stdout
    assert f"never reached n2:{vnet.b.host_if}" in table.stdout


def test_trace_waits_for_a_flow_made_elsewhere(vnet):
    run = CliRun("trace", "web-a", "--fabric", vnet.path, "--to", "10.99.0.7:8080", "--wait", "30",
                 "--json", stdout=subprocess.PIPE)
    try:
        run.wait_for("listening on 8 hops")
        tcp_exchange(vnet.a.netns, vnet.a.address, vnet.b.netns, vnet.b.address, 8080)
        out, _ = run.proc.communicate(timeout=60)
    finally:
        run.kill()
    report = json.loads(out)
    assert run.proc.returncode == 0, run.stderr
    assert report["generated"] is None and report["complete"] is True
    assert all(h["forward_kinds"][0] == "S" and h["reply_kinds"] == ["SA"]
               for h in report["hops"]), report["hops"]


def _children_named(parent: int, comm: str) -> list[int]:
    """The pids of parent's children whose command name is `comm`."""
    return [pid for pid, (name, _, ppid) in process_table().items() if name == comm and ppid == parent]


def test_trace_wait_stops_as_soon_as_a_capture_dies(vnet):
    run = CliRun("trace", "web-a", "--fabric", vnet.path, "--to", "10.99.0.7:8080", "--wait", "600")
    try:
        run.wait_for("listening on 8 hops")
        dumps = _children_named(run.proc.pid, "tcpdump")
        assert len(dumps) == 8
        os.kill(dumps[3], signal.SIGKILL)
        code = run.wait(60)  # it was told to wait 600 s: only noticing the dead capture ends it
    finally:
        run.kill()
    assert code == 1, run.stderr
    assert "a capture ended early" in run.stderr


def test_trace_within_one_node(namespaces, vnet):
    add_pod(namespaces, vnet.nodes[0], "web-c", "10.99.0.9")
    code, report = trace_json(vnet, "--to", "10.99.0.9")
    assert code == 0
    assert [h["role"] for h in report["hops"]] == ["pod veth", "bridge", "pod veth"]


@pytest.mark.parametrize("to, message", [("10.99.0.7:99999", "port must be 1-65535"),
                                         ("web-b", "not an IP address")])
def test_trace_rejects_a_bad_destination(vnet, to, message):
    result = run_cli("trace", "web-a", "--fabric", vnet.path, "--to", to)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
