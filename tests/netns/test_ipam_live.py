"""vnet-ipam as a real plugin process against a live metadata service on loopback: the whole
pool, exhaustion, reuse, 64 concurrent ADD/DEL processes on one state directory, and a
metadata service that is down, slow or answers garbage."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from vnetcni.ipam.metadata import render_node
from vnetcni.ipam.server import METADATA_PATH_AND_QUERY, serve
from vnetcni.ipam.store import IpamStore

VNET_IPAM = os.path.join(os.path.dirname(sys.executable), "vnet-ipam")
PRIMARY = "10.240.0.35"
SECONDARIES = [f"10.240.0.{i}" for i in range(36, 66)]
EXHAUSTED = re.compile(r"^no address available on this node: (\d+) of 30 in use$")


@pytest.fixture
def metadata(tmp_path):
    path = tmp_path / "interfaces.xml"
    path.write_bytes(render_node("000D3A51C490", "10.240.0.0/16", PRIMARY, SECONDARIES))
    srv = serve("127.0.0.1", 0, str(path))
    srv.interfaces_path = str(path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def netns_path(pod_ns):
    return pod_ns()[1]


def conf(url: str, state_dir: str, version: str = "1.0.0", **ipam) -> dict:
    return {"cniVersion": version, "name": "vntnet", "type": "bridge",
            "ipam": {"type": "vnet-ipam", "metadataUrl": url, "stateDir": state_dir, **ipam}}


def start(command: str, config: dict, cid: str = "", netns: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
                "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME=pod-{cid}"})
    proc = subprocess.Popen([VNET_IPAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdin.write(json.dumps(config).encode())
    proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, dict | None]:
    out = proc.stdout.read()
    proc.stderr.read()
    code = proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()
    text = out.decode().strip()
    return code, json.loads(text) if text else None


def run(command: str, config: dict, cid: str = "", netns: str = "") -> tuple[int, dict | None]:
    return finish(start(command, config, cid, netns))


def address(answer: dict) -> str:
    return answer["ips"][0]["address"].split("/")[0]


def held(state_dir: str) -> dict[str, str]:
    return {a.container_id: a.ip for a in IpamStore(state_dir).read().allocations.values()}


def test_whole_pool_then_exhaustion_then_reuse(metadata, state_dir, netns_path):
    config = conf(metadata.url, state_dir, reuseCooldownSeconds=0, refreshSeconds=3600)
    got = {}
    for i in range(30):
        code, answer = run("ADD", config, f"c{i}", netns_path)
        assert code == 0, answer
        assert answer["ips"][0]["gateway"] == "10.240.0.1" and answer["ips"][0]["address"].endswith("/16")
        got[f"c{i}"] = address(answer)
    assert sorted(got.values(), key=lambda a: int(a.rsplit(".", 1)[1])) == SECONDARIES  # 30 distinct, no primary
    assert metadata.requests == 1

    with open(os.path.join(state_dir, "ipam.json"), "rb") as f:
        before = f.read()
    code, answer = run("ADD", config, "c30", netns_path)
    assert code == 1 and answer["code"] == 100
    assert answer["msg"] == "no address available on this node: 30 of 30 in use"
    with open(os.path.join(state_dir, "ipam.json"), "rb") as f:
        assert f.read() == before  # no state change

    assert run("DEL", config, "c7")[0] == 0  # no netns, no prevResult
    assert run("DEL", config, "c7")[0] == 0  # twice, as containerd does
    code, answer = run("ADD", config, "c30", netns_path)
    assert code == 0 and address(answer) == got["c7"]
    assert held(state_dir) == {**{k: v for k, v in got.items() if k != "c7"}, "c30": got["c7"]}


def test_64_concurrent_add_and_del_processes(metadata, state_dir, netns_path):
    config = conf(metadata.url, state_dir, refreshSeconds=3600)  # default 30 s cooldown

    # 24 ADDs at once on a fresh node: one metadata query between them all.
    procs = {f"p{i}": start("ADD", config, f"p{i}", netns_path) for i in range(24)}
    first = {cid: finish(p) for cid, p in procs.items()}
    assert all(code == 0 for code, _ in first.values()), first
    assert len({address(a) for _, a in first.values()}) == 24
    assert metadata.requests == 1

    # Then 64 at once: DEL of those 24, and 40 new ADDs competing for what is free.
    procs = {("DEL", f"p{i}"): start("DEL", config, f"p{i}") for i in range(24)}
    procs.update({("ADD", f"n{i}"): start("ADD", config, f"n{i}", netns_path) for i in range(40)})
    results = {key: finish(p) for key, p in procs.items()}

    assert all(results[("DEL", f"p{i}")] == (0, None) for i in range(24))
    told = {}
    for (verb, cid), (code, answer) in results.items():
        if verb != "ADD":
            continue
        if code == 0:
            told[cid] = address(answer)
        else:
            assert answer["code"] == 100 and EXHAUSTED.match(answer["msg"]), answer
    assert len(told) >= 6  # at least the 6 never-used addresses
    assert len(set(told.values())) == len(told), "an address was handed out twice"
    assert PRIMARY not in told.values()
    assert held(state_dir) == told  # every release happened, every grant is recorded, nothing else

    # Nothing leaked: exactly the rest of the pool can still be handed out.
    more = 0
    while True:
        code, answer = run("ADD", config, f"m{more}", netns_path)
        if code != 0:
            assert answer["msg"] == "no address available on this node: 30 of 30 in use"
            break
        more += 1
    assert more == 30 - len(told)


@pytest.mark.parametrize("failure", ["down", "slow", "garbage", "http 500"])
def test_metadata_failure_after_a_good_answer_keeps_the_pool(metadata, state_dir, netns_path, failure):
    config = conf(metadata.url, state_dir, refreshSeconds=0, metadataTimeoutSeconds=0.5)
    code, answer = run("ADD", config, "a", netns_path)
    assert code == 0 and address(answer) == "10.240.0.36"
    if failure == "down":
        metadata.stop()
    elif failure == "slow":
        metadata.delay_seconds = 5
    elif failure == "garbage":
        with open(metadata.interfaces_path, "wb") as f:
            f.write(b"<html><body>upstream timed out</body></html>")
    else:
        metadata.fail_status = 500
    code, answer = run("ADD", config, "b", netns_path)
    assert code == 0 and address(answer) == "10.240.0.37"
    state = IpamStore(state_dir).read()
    assert state.refresh.last_error and len(state.pool.addresses) == 30
    assert run("STATUS", conf(metadata.url, state_dir, "1.1.0"))[0] == 0  # a known pool is enough


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}{METADATA_PATH_AND_QUERY}"


def test_metadata_never_learned_is_try_again_later(state_dir, netns_path):
    url = closed_port_url()
    code, answer = run("ADD", conf(url, state_dir), "a", netns_path)
    assert code == 1 and answer["code"] == 11 and "cannot reach" in answer["msg"]
    code, answer = run("STATUS", conf(url, state_dir, "1.1.0", refreshSeconds=0))
    assert code == 1 and answer["code"] == 50
    assert held(state_dir) == {}


def test_garbage_from_the_start_is_try_again_later(metadata, state_dir, netns_path):
    with open(metadata.interfaces_path, "wb") as f:
        f.write(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Interfaces>&a;</Interfaces>')
    code, answer = run("ADD", conf(metadata.url, state_dir), "a", netns_path)
    assert code == 1 and answer["code"] == 11 and "hostile" in answer["msg"]
