"""vnetd behind the front doors, for real: the pod's netns passed as a descriptor to a vnetd in
another mount namespace (issue 10), a stopped vnetd answered with code 11 within the deadline
(issue 11 #1), and the no-fallback build's DEL carried out by vnetd at start (issue 10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.statefiles import load_state
from support.cni import links, metadata_xml, ns_exec, run_plugin, wait_for
from support.vnetd import wait_for_teardowns
from vnetcni.daemon.client import listening

VNETD = str(Path(sys.executable).with_name("vnetd"))
SLACK = 3.0


class Vnetd:
    """vnetd in a node namespace; with hide_netns, also in a mount namespace of its own where a
    private tmpfs covers /run/netns (as in a container without the host's /var/run/netns)."""

    def __init__(self, node: str, state_dir: str, log: str, hide_netns: bool = False) -> None:
        self.node, self.state_dir, self.log = node, state_dir, log
        cmd = [VNETD, "--state-dir", state_dir, "--log-file", log]
        if hide_netns:
            script = 'mount -t tmpfs vnt-hide /run/netns && exec "$@"'
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *cmd]
        self.proc = subprocess.Popen(["ip", "netns", "exec", node, *cmd], stderr=subprocess.PIPE)
        self.sock = os.path.join(state_dir, "vnetd.sock")
        wait_for(lambda: listening(self.sock) or self.proc.poll() is not None, what="vnetd socket")
        assert self.proc.poll() is None, self.proc.stderr.read().decode()

    def served(self) -> list[dict]:
        if not os.path.exists(self.log):
            return []
        return [json.loads(line) for line in open(self.log) if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


@pytest.fixture
def vnetds():
    started: list[Vnetd] = []

    def start(*args, **kw) -> Vnetd:
        d = Vnetd(*args, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def conf_for(state_dir, tmp_path, **extra):
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 46)]))
    return {"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet", "bridge": "vntbr0", "stateDir": state_dir,
            "ipam": {"type": "vnet-ipam", "metadataFile": str(md), "reuseCooldownSeconds": 0}, **extra}


def allocations(state_dir) -> dict:
    path = os.path.join(state_dir, "ipam.json")
    return load_state(path)["allocations"] if os.path.exists(path) else {}


def records(state_dir) -> dict:
    path = os.path.join(state_dir, "endpoints.json")
    return load_state(path)["endpoints"] if os.path.exists(path) else {}


def test_vnetd_in_another_mount_namespace_serves_pods_created_after_it(cni_bin, node_ns, pod_ns, tmp_path,
                                                                       state_dir, vnetds):
    d = vnetds(node_ns, state_dir, str(tmp_path / "log"), hide_netns=True)
    name, path = pod_ns()  # created afterwards, from the runtime's mount namespace
    hidden = subprocess.run(["nsenter", "-t", str(d.proc.pid), "-m", "test", "-e", path])
    assert hidden.returncode != 0, "vnetd must not see the pod's netns path for this test to mean anything"
    conf = conf_for(state_dir, tmp_path)
    vnet = os.path.join(cni_bin, "vnet")
    add = run_plugin(vnet, "ADD", conf, node=node_ns, container_id="ctr0", netns=path, cni_path=cni_bin)
    assert add.ok, add
    ip = add.out["ips"][0]["address"]
    assert ip.split("/")[0] in ns_exec(name, "ip", "-o", "addr", "show", "eth0").stdout
    check = run_plugin(vnet, "CHECK", dict(conf, prevResult=add.out), node=node_ns, container_id="ctr0",
                       netns=path, cni_path=cni_bin)
    assert check.ok, check
    delete = run_plugin(vnet, "DEL", conf, node=node_ns, container_id="ctr0", netns=path, cni_path=cni_bin)
    assert delete.ok, delete
    assert [(r["verb"], r["result"]) for r in d.served()] == [("ADD", "ok"), ("CHECK", "ok"), ("DEL", "ok")]
    wait_for_teardowns(state_dir)
    assert allocations(state_dir) == {} and records(state_dir) == {}
    assert not [l for l in links(node_ns) if l.startswith("azv")]
    # a path that is no network namespace is refused as such, by vnetd too
    bogus = tmp_path / "not-a-netns"
    bogus.write_text("")
    bad = run_plugin(vnet, "ADD", conf, node=node_ns, container_id="ctr1", netns=str(bogus), cni_path=cni_bin)
    assert bad.code == 1 and "not a network namespace" in bad.out["msg"], bad
    assert d.served()[-1]["verb"] == "ADD" and allocations(state_dir) == {}
    # in-process (no vnetd for this state directory) answers the same
    other = str(tmp_path / "in-process")
    os.makedirs(other)
    same = run_plugin(vnet, "ADD", conf_for(other, tmp_path), node=node_ns, container_id="ctr1", netns=str(bogus),
                      cni_path=cni_bin)
    assert (same.code, same.out) == (bad.code, bad.out)


@pytest.mark.parametrize("front", ["compiled", "python"])
def test_a_stopped_vnetd_is_answered_with_code_11_within_the_deadline(cni_bin, node_ns, pod_ns, tmp_path,
                                                                      state_dir, vnetds, front):
    d = vnetds(node_ns, state_dir, str(tmp_path / "log"))
    _, path = pod_ns()
    conf = conf_for(state_dir, tmp_path, vnetdTimeoutSeconds=1)
    binary = os.path.join(cni_bin, "vnet") if front == "compiled" else os.path.join(cni_bin, ".vnet-cni", "vnet")
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = run_plugin(binary, "ADD", conf, node=node_ns, container_id="ctr0", netns=path, cni_path=cni_bin)
        took = time.monotonic() - started
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    assert r.code == 1 and r.out["code"] == 11, r
    assert "vnetd did not answer within" in r.out["msg"] and d.sock in r.out["msg"], r
    assert took < 1 + SLACK
    # the runtime gave up on that ADD; its DEL follows and leaves nothing
    wait_for(lambda: d.served(), what="vnetd to take the queued ADD")
    assert run_plugin(binary, "DEL", conf, node=node_ns, container_id="ctr0", netns=path, cni_path=cni_bin).ok
    wait_for_teardowns(state_dir)
    assert allocations(state_dir) == {} and records(state_dir) == {}
    assert not [l for l in links(node_ns) if l.startswith("azv")]


@pytest.fixture
def no_fallback_bin(tmp_path):
    from vnetcni.plugins.install import install

    d = tmp_path / "bin"
    res = install(str(d), fallback=False)
    assert not (d / ".vnet-cni").exists() and res.compiled
    return str(d)


def test_no_fallback_dels_without_vnetd_are_carried_out_when_it_starts(no_fallback_bin, node_ns, pod_ns,
                                                                       tmp_path, state_dir, vnetds):
    vnet = os.path.join(no_fallback_bin, "vnet")
    conf = conf_for(state_dir, tmp_path)
    first = vnetds(node_ns, state_dir, str(tmp_path / "log1"))
    _, path = pod_ns()
    add = run_plugin(vnet, "ADD", conf, node=node_ns, container_id="ctr0", netns=path)
    assert add.ok and [r["verb"] for r in first.served()] == ["ADD"], add
    veth = next(l for l in links(node_ns) if l.startswith("azv"))
    first.stop()

    _, other = pod_ns()
    started = time.monotonic()
    r = run_plugin(vnet, "ADD", conf, node=node_ns, container_id="ctr1", netns=other)
    assert r.code == 1 and r.out["code"] == 11 and "vnetd is not listening" in r.out["msg"], r
    assert first.sock in r.out["msg"] and time.monotonic() - started < SLACK
    r = run_plugin(vnet, "DEL", conf, node=node_ns, container_id="ctr0", netns=path)
    assert r.ok, r  # the runtime can remove the pod
    assert len(os.listdir(os.path.join(state_dir, "pending-deletes"))) == 1
    assert len(allocations(state_dir)) == 1 and veth in links(node_ns)  # not yet: vnetd does it

    second = vnetds(node_ns, state_dir, str(tmp_path / "log2"))
    # done before vnetd listened: nothing leaked, the record gone, the veth removed by vnetd
    assert allocations(state_dir) == {} and records(state_dir) == {}
    assert veth not in links(node_ns)
    assert os.listdir(os.path.join(state_dir, "pending-deletes")) == []
    add = run_plugin(vnet, "ADD", conf, node=node_ns, container_id="ctr1", netns=other)
    assert add.ok and [r["verb"] for r in second.served()] == ["ADD"], add
    assert run_plugin(vnet, "DEL", conf, node=node_ns, container_id="ctr1", netns=other).ok
    wait_for_teardowns(state_dir)
    assert allocations(state_dir) == {}


# --- fault-matrix cells (tests/support/invariants.py) ------------------------------------------
def _burst(calls, binary, node, conf, jobs, cni_path=None):
    """Run (verb, container, netns path) jobs at once through `binary`; record each call."""
    from concurrent.futures import ThreadPoolExecutor

    deadline = conf.get("vnetdTimeoutSeconds", 5.0) + SLACK

    def one(job):
        verb, cid, path = job
        started = time.monotonic()
        r = run_plugin(binary, verb, conf, node=node, container_id=cid, netns=path,
                       **({"cni_path": cni_path} if cni_path else {}))
        calls.record(r.code, r.out, time.monotonic() - started, deadline=deadline, what=f"{verb} {cid}")
        return r

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, jobs))


def test_matrix_vnetd_in_another_mount_namespace(no_fallback_bin, node_ns, pod_ns, tmp_path, state_dir, vnetds):
    from support.invariants import CallLog, check_calls, node_problems, write_report

    d = vnetds(node_ns, state_dir, str(tmp_path / "log"), hide_netns=True)
    vnet = os.path.join(no_fallback_bin, "vnet")
    conf = conf_for(state_dir, tmp_path)
    pods = {f"ctr{i}": pod_ns() for i in range(8)}  # all created after vnetd, invisible to it
    calls = CallLog("vnetd in another mount namespace")
    adds = _burst(calls, vnet, node_ns, conf, [("ADD", c, p) for c, (_, p) in pods.items()])
    assert all(r.ok for r in adds), [r for r in adds if not r.ok]
    half = list(pods)[:4]
    _burst(calls, vnet, node_ns, conf, [("DEL", c, pods[c][1]) for c in half]
           + [("CHECK", c, pods[c][1]) for c in list(pods)[4:]])
    check_calls(calls)
    assert all(c.code == 0 for c in calls.calls), [c for c in calls.calls if c.code]
    wait_for_teardowns(state_dir)
    problems = node_problems(node=node_ns, state_dirs=[state_dir], pods={c: n for c, (n, _) in pods.items()})
    assert not problems, problems
    assert len(allocations(state_dir)) == 4 and len(d.served()) == 16
    _burst(calls, vnet, node_ns, conf, [("DEL", c, pods[c][1]) for c in list(pods)[4:]])
    wait_for_teardowns(state_dir)
    assert allocations(state_dir) == {} and not [l for l in links(node_ns) if l.startswith("azv")]
    write_report(calls.report())


def test_matrix_no_fallback_vnetd_killed_mid_burst(no_fallback_bin, node_ns, pod_ns, tmp_path, state_dir, vnetds):
    """The image's front doors, vnetd SIGKILLed while a burst of ADDs and DELs runs, then started
    again: every call answered in time (ADD 0 or 11, DEL 0), and once the retries are done nothing
    is leaked or held twice; DELs that found no vnetd were carried out by the next one."""
    from support.invariants import CallLog, check_calls, node_problems, write_report

    vnet = os.path.join(no_fallback_bin, "vnet")
    conf = conf_for(state_dir, tmp_path, vnetdTimeoutSeconds=2)
    first = vnetds(node_ns, state_dir, str(tmp_path / "log1"))
    pods = {f"ctr{i}": pod_ns() for i in range(10)}
    calls = CallLog("no-fallback, vnetd SIGKILL mid-burst")
    olds = list(pods)[:4]
    assert all(r.ok for r in _burst(calls, vnet, node_ns, conf, [("ADD", c, pods[c][1]) for c in olds]))
    from threading import Thread

    def killer():
        wait_for(lambda: len(first.served()) >= 6, what="some of the burst served")
        first.proc.kill()

    k = Thread(target=killer)
    k.start()
    jobs = [("DEL", c, pods[c][1]) for c in olds] + [("ADD", c, pods[c][1]) for c in list(pods)[4:]]
    results = dict(zip([j[1] + j[0] for j in jobs], _burst(calls, vnet, node_ns, conf, jobs)))
    k.join()
    check_calls(calls)
    assert {c.code for c in calls.calls if c.what.startswith("DEL")} == {0}
    assert {c.code for c in calls.calls} <= {0, 1}
    assert {c.out["code"] for c in calls.calls if c.code} <= {11}
    first.proc.wait(10)
    recorded = len(os.listdir(os.path.join(state_dir, "pending-deletes")))
    vnetds(node_ns, state_dir, str(tmp_path / "log2"))  # carries out the recorded DELs first
    for c in list(pods)[4:]:  # the runtime retries the ADDs that failed
        if not results[c + "ADD"].ok:
            r = run_plugin(vnet, "ADD", conf, node=node_ns, container_id=c, netns=pods[c][1])
            assert r.ok, r
    live = list(pods)[4:]
    problems = node_problems(node=node_ns, state_dirs=[state_dir], pods={c: pods[c][0] for c in live})
    assert not problems, problems
    assert sorted(a["containerId"] for a in allocations(state_dir).values()) == sorted(live)
    assert os.listdir(os.path.join(state_dir, "pending-deletes")) == []
    write_report(calls.report(restarted=True, dels_recorded_while_down=recorded))
    _burst(calls, vnet, node_ns, conf, [("DEL", c, pods[c][1]) for c in live])
    wait_for_teardowns(state_dir)
    assert allocations(state_dir) == {} and not [l for l in links(node_ns) if l.startswith("azv")]
