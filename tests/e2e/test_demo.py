"""`vnetctl demo` end to end, as a person runs it: exit code, what it shows, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from support import resources
from conftest import require_tool

VNETCTL = os.path.join(os.path.dirname(sys.executable), "vnetctl")
# vnt<pid>: the harness sweeps leftovers by that prefix, and a concurrent test session's sweep
# leaves this live session's fabric alone (a bare `vnt` fabric was swept away mid-test).
PREFIX = os.environ.get("VNET_SIM_TEST_PREFIX", resources.OWNER)


@pytest.fixture
def demo_env(tmp_path):
    require_tool("nft")
    require_tool("ping")
    env = dict(os.environ, VNET_SIM_PREFIX=PREFIX, VNET_SIM_ROOT=str(tmp_path / "sim"), COLUMNS="160")
    name = f"d{uuid.uuid4().hex[:6]}"
    try:
        yield env, name
    finally:  # whatever happened, the fabric goes
        subprocess.run([VNETCTL, "fabric", "down", "--name", name], env=env, capture_output=True)


def _namespaces(name: str) -> list[str]:
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith(f"{PREFIX}{name}-")]
    except FileNotFoundError:
        return []


def test_demo_tells_the_whole_story_and_leaves_nothing(demo_env):
    env, name = demo_env
    proc = subprocess.run([VNETCTL, "demo", "--name", name], env=env, capture_output=True, text=True,
                          timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert "every check passed" in out
    for node in ("node1", "node2", "node3"):
        assert f"web-{node}-1" in out
    assert "0 IPv4 packets crossed the fabric" in out
    # the Service column: a ClusterIP called from every sampled pod (its backend through hairpin),
    # and its NodePort through every node
    assert "ok hairpin" in out and "service web" in out
    assert "through every node: node1 ok, node2 ok, node3 ok" in out
    assert "no address available on this node: 30 of 30 in use (CNI error 100)" in out
    assert "left nothing behind" in out
    # the pools table: node | in use | free | cooling | pool size, every node's 30 addresses back to
    # free or cooling down (vnet-ipam's default reuse cooldown, as on a real node)
    rows = re.findall(r"node\d\s*│\s*0\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*30\s*│", out)
    assert len(rows) == 3 and all(int(free) + int(cooling) == 30 for free, cooling in rows), rows
    assert "reuse cooldown" in out
    assert _namespaces(name) == []
    assert not os.path.exists(os.path.join(env["VNET_SIM_ROOT"], name))


def test_demo_keep_leaves_a_fabric_that_status_shows_and_down_removes(demo_env):
    env, name = demo_env
    proc = subprocess.run([VNETCTL, "demo", "--name", name, "--keep", "--pods-per-node", "1"], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert len(_namespaces(name)) == 4  # the fabric and three nodes; the pods were deleted

    status = subprocess.run([VNETCTL, "fabric", "status", "--name", name, "--json"], env=env,
                            capture_output=True, text=True, check=True)
    data = json.loads(status.stdout)
    assert data["healthy"] and data["pods"] == []
    # The demo's pods were deleted: their addresses cool down (vnet-ipam's default 30 s), the rest are free.
    assert [n["pool"]["free"] + n["pool"]["cooling"] for n in data["nodes"]] == [30, 30, 30]
    assert [n["pool"]["in_use"] for n in data["nodes"]] == [0, 0, 0]

    add = subprocess.run([VNETCTL, "pod", "add", "node2", "web", "--fabric", name], env=env,
                         capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    assert "default/web on node2: 10.240.0." in add.stdout

    down = subprocess.run([VNETCTL, "fabric", "down", "--name", name], env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert _namespaces(name) == []
    assert not os.path.exists(os.path.join(env["VNET_SIM_ROOT"], name))
