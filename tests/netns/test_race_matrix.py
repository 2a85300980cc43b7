"""The fault matrix's race cells (issue 11): overlapping calls for one attachment, and vnetd
stopped, killed or restarted in the middle of a burst.

Every cell runs real plugin processes (the installed C front door, through vnetd or in-process)
against real pod namespaces in a throwaway node namespace, then asserts with
tests/support/invariants.py: no address on two pods (read from the kernel), no leaked veth,
allocation or record, every call answered within its deadline with a result or a well-formed CNI
error. A call the runtime saw fail leaves nothing behind once vnetd has settled. Each cell's
slowest call goes to the matrix report (printed with `pytest -s`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from support.cni import metadata_xml, wait_for
from support.invariants import (CallLog, allocations, check_calls, endpoint_records, node_problems,
                                node_veths, pod_addresses, write_report)
from support.vnetd import Daemon, wait_for_teardowns

VNETD_TIMEOUT = 3.0  # vnetdTimeoutSeconds: how long a front door waits on vnetd
# What a call may take: vnetd's deadline, or in-process its short lock waits (no holder stays
# stopped in-process here, so none runs to the lock's 60 s default) plus the interpreter's start
# on a loaded 2-core machine.
CALL_DEADLINE = 20.0


@dataclass
class Node:
    name: str
    sd: str
    cni_bin: str
    conf: dict
    make_ns: object
    log: CallLog
    daemon: Daemon | None = None
    pods: dict[str, str] = field(default_factory=dict)  # container ID -> pod netns name
    _serial: int = 0

    def new_pods(self, n: int, tag: str) -> list[str]:
        out = []
        for _ in range(n):
            self._serial += 1
            cid = f"{tag}{self._serial:03d}"
            self.pods[cid] = self.make_ns()[0]
            out.append(cid)
        return out

    def call(self, verb: str, cid: str, in_process: bool = False) -> tuple[int, dict | None]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update({"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{self.pods[cid]}",
                    "CNI_IFNAME": "eth0", "CNI_PATH": self.cni_bin,
                    "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=race;K8S_POD_NAME={cid}"})
        if in_process:  # the Python entry, told the front door asked vnetd already: no vnetd
            env["VNET_FRONT_DOOR_TRIED"] = "1"
            cmd = [sys.executable, "-m", "vnetcni.plugins.vnet_main"]
        else:
            cmd = [os.path.join(self.cni_bin, "vnet")]
        what = f"{verb} {cid}{' in-process' if in_process else ''}"
        start = time.monotonic()
        try:
            proc = subprocess.run(["ip", "netns", "exec", self.name, *cmd], input=json.dumps(self.conf).encode(),
                                  env=env, capture_output=True, timeout=CALL_DEADLINE + 20)
        except subprocess.TimeoutExpired:
            self.log.record(-1, None, time.monotonic() - start, deadline=CALL_DEADLINE, what=what, note="hung")
            return -1, None
        elapsed = time.monotonic() - start
        text = proc.stdout.decode(errors="replace").strip()
        try:
            out = json.loads(text) if text else None
        except ValueError:
            out = None
        note = "" if out is not None or not text else f"stdout {text[:200]!r}"
        if proc.returncode != 0 and out is None:
            note += f" stderr {proc.stderr.decode(errors='replace')[-300:]!r}"
        self.log.record(proc.returncode, out, elapsed, deadline=CALL_DEADLINE, what=what, note=note)
        return proc.returncode, out

    def burst(self, plan: list[tuple[str, str, bool]], fault=None) -> list[tuple[str, str, int, dict | None]]:
        """Run every (verb, cid, in_process) at once; `fault()` runs alongside (a signal to vnetd)."""
        gate = threading.Barrier(len(plan) + (1 if fault else 0))

        def one(item):
            verb, cid, inproc = item
            gate.wait()
            return (verb, cid, *self.call(verb, cid, inproc))

        with ThreadPoolExecutor(max_workers=len(plan) + 1) as pool:
            futures = [pool.submit(one, item) for item in plan]
            if fault:
                pool.submit(lambda: (gate.wait(), fault()))
            return [f.result() for f in futures]

    # --- what the node holds ----------------------------------------------------------------
    def assert_invariants(self) -> None:
        problems = node_problems(node=self.name, state_dirs=[self.sd], pods=self.pods)
        assert not problems, "\n".join(problems)

    def attached(self, cid: str) -> bool:
        return any(a.get("containerId") == cid for a in allocations(self.sd).values())

    def traces(self, cid: str) -> list[str]:
        """Anything the node still holds for a container (allocation, record, veth, pod address)."""
        from vnetcni.plugins.endpoints import host_ifname

        out = [f"allocation {a['address']}" for a in allocations(self.sd).values() if a.get("containerId") == cid]
        out += [f"record {k}" for k, r in endpoint_records(self.sd).items() if r.get("containerId") == cid]
        if host_ifname(self.conf["name"], cid, "eth0") in node_veths(self.name):
            out.append("veth")
        out += [f"pod address {a}" for a in pod_addresses(self.pods[cid])]
        return out

    def settle(self) -> None:
        """Wait until no call holds an attachment's lock (files stay until the DEL, unheld) and
        vnetd's reaper has finished every teardown a DEL answered before the veth was gone."""
        from vnetcni.state.locks import is_held

        lock_dir = os.path.join(self.sd, "locks")

        def idle():
            try:
                names = os.listdir(lock_dir)
            except FileNotFoundError:
                return True
            return not any(is_held(os.path.join(lock_dir, n)) for n in names if n.startswith("attachment-"))

        wait_for(idle, timeout=30, what="calls in flight to finish")
        wait_for_teardowns(self.sd)
        wait_for(idle, timeout=30, what="vnetd's reaper to let go of the attachments")

    def clean_up_and_check(self) -> None:
        """The runtime deletes every pod: the node must be left with nothing."""
        self.burst([("DEL", cid, False) for cid in self.pods])
        self.settle()
        self.assert_invariants()
        assert allocations(self.sd) == {} and endpoint_records(self.sd) == {}, "left after every DEL"
        assert node_veths(self.name) == set()
        lock_dir = os.path.join(self.sd, "locks")
        left = [n for n in os.listdir(lock_dir) if n.startswith("attachment-")] if os.path.isdir(lock_dir) else []
        assert not left, f"attachment lock files left behind: {left}"


@pytest.fixture
def node(cni_bin, namespaces, pod_ns, tmp_path, request):
    name = namespaces.make("node")
    sd = str(tmp_path / "state")
    os.makedirs(sd)
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 76)]))
    conf = {"cniVersion": "1.0.0", "name": "vntrace", "type": "vnet", "bridge": "vntbr0", "stateDir": sd,
            "vnetdTimeoutSeconds": VNETD_TIMEOUT,
            # No cooldown: an address released by mistake would be handed out again at once.
            "ipam": {"type": "vnet-ipam", "metadataFile": str(md), "reuseCooldownSeconds": 0}}
    n = Node(name, sd, cni_bin, conf, pod_ns, CallLog(request.node.name.removeprefix("test_")))
    yield n
    if n.daemon is not None:
        n.daemon.stop()


def start_vnetd(node: Node) -> Daemon:
    node.daemon = Daemon(node.name, node.sd, os.path.join(node.sd, "..", "vnetd.log")).start()
    return node.daemon


def report(node: Node, **extra) -> None:
    check_calls(node.log)
    write_report(node.log.report(**extra))


def in_process_flags(mode: str, n: int) -> list[bool]:
    return {"vnetd": [False] * n, "in-process": [True] * n, "mixed": [i % 2 == 1 for i in range(n)]}[mode]


MODES = ["vnetd", "in-process", "mixed"]


# --- same-attachment races ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_add_add(node, mode):
    """Four ADDs of one attachment at once (a runtime's retry after a timeout), for several pods,
    in two rounds: each attachment gets one address, the same in every answer."""
    if mode != "in-process":
        start_vnetd(node)
    for _ in range(2):
        cids = node.new_pods(3 if mode == "in-process" else 4, "aa")  # in-process: 12 interpreters
        flags = in_process_flags(mode, 4)
        results = node.burst([("ADD", cid, flags[k]) for cid in cids for k in range(4)])
        node.settle()
        node.assert_invariants()
        for cid in cids:
            answers = [(code, out) for _, c, code, out in results if c == cid]
            ok = {out["ips"][0]["address"] for code, out in answers if code == 0}
            assert len(ok) == 1, f"{cid}: ADDs answered {answers}"
            assert all(code == 0 or out.get("code") == 11 for code, out in answers), answers
    node.clean_up_and_check()
    report(node, mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_add_del(node, mode):
    """ADD, DEL, ADD, DEL of one attachment at once (a DEL for a sandbox whose ADD still runs):
    whatever order they take, the pod ends up wholly attached or wholly detached."""
    if mode != "in-process":
        start_vnetd(node)
    rng = random.Random(11)
    for _ in range(2):
        cids = node.new_pods(3 if mode == "in-process" else 4, "ad")
        flags = in_process_flags(mode, 4)
        plan = [(verb, cid, flags[k]) for cid in cids for k, verb in enumerate(("ADD", "DEL", "ADD", "DEL"))]
        rng.shuffle(plan)
        results = node.burst(plan)
        node.settle()
        node.assert_invariants()
        assert all(code == 0 or (out or {}).get("code") == 11 for _, _, code, out in results), results
    # New pods next to whatever the races left: no address they get may be held by another pod.
    fresh = node.new_pods(4, "af")
    assert all(code == 0 for *_, code, _ in node.burst([("ADD", cid, False) for cid in fresh]))
    node.assert_invariants()
    node.clean_up_and_check()
    report(node, mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_del_del(node, mode):
    """Three DELs of one attachment at once: all succeed, nothing is left, nothing released twice."""
    if mode != "in-process":
        start_vnetd(node)
    cids = node.new_pods(3 if mode == "in-process" else 5, "dd")
    assert all(code == 0 for *_, code, _ in node.burst([("ADD", cid, False) for cid in cids]))
    flags = in_process_flags(mode, 3)
    results = node.burst([("DEL", cid, flags[k]) for cid in cids for k in range(3)])
    assert all(code == 0 for _, _, code, _ in results), [r for r in results if r[2] != 0]
    node.settle()
    node.assert_invariants()
    assert allocations(node.sd) == {} and endpoint_records(node.sd) == {}
    node.clean_up_and_check()
    report(node, mode=mode)


# --- vnetd faults in the middle of a burst --------------------------------------------------------
def fault_burst(node: Node, rng: random.Random, fault) -> tuple[list, list[str], list[str]]:
    """ADDs for new pods (two of them sent twice) and DELs for attached ones, with `fault`
    striking at a random point. Returns the results, the containers whose ADD never succeeded
    and those whose DEL failed (a runtime DELs the former and retries the latter)."""
    attached = node.new_pods(3, "fk")
    assert all(code == 0 for *_, code, _ in node.burst([("ADD", cid, False) for cid in attached]))
    fresh = node.new_pods(6, "fn")
    plan = [("ADD", cid, False) for cid in fresh] + [("ADD", cid, False) for cid in fresh[:2]]
    plan += [("DEL", cid, False) for cid in attached]
    rng.shuffle(plan)
    results = node.burst(plan, fault)
    failed = [cid for cid in fresh if not any(code == 0 for verb, c, code, _ in results if c == cid)]
    undeleted = [cid for verb, cid, code, _ in results if verb == "DEL" and code != 0]
    return results, failed, undeleted


def assert_failed_adds_left_nothing(node: Node, failed: list[str]) -> None:
    for cid in failed:
        held = node.traces(cid)
        if held:
            calls = [(c.what, c.code, c.out, round(c.elapsed, 3)) for c in node.log.calls if cid in c.what]
            served = [r for r in node.daemon.served() if r.get("container") == cid] if node.daemon else []
            raise AssertionError(f"ADD of {cid} failed, yet the node holds {held}; calls {calls}; vnetd {served}")


def runtime_cleans_up(node: Node, results: list, failed: list[str], undeleted: list[str]) -> None:
    """Every call was answered (a result or code 11); then, as a runtime does, DEL for every
    sandbox whose ADD failed and DEL again where a DEL failed: nothing is left for them, and
    nothing at all once every pod is deleted."""
    assert all(code == 0 or (out or {}).get("code") == 11 for _, _, code, out in results), results
    node.burst([("DEL", cid, False) for cid in failed + undeleted] or [("DEL", next(iter(node.pods)), False)])
    node.settle()
    assert_failed_adds_left_nothing(node, failed)
    node.assert_invariants()
    node.clean_up_and_check()


@pytest.mark.parametrize("round_", range(3))
def test_vnetd_sigstop(node, round_):
    """vnetd stopped mid-burst: calls waiting on it answer code 11 at their deadline; once it runs
    again it starts none of them and rolls back what it had begun: nothing stays allocated for
    a call the runtime saw fail (and `vnetctl status` counts those calls)."""
    daemon = start_vnetd(node)
    rng = random.Random(round_)
    delay = rng.uniform(0.01, 0.15)
    results, failed, undeleted = fault_burst(node, rng, lambda: (time.sleep(delay), daemon.pause()))
    time.sleep(0.5)
    daemon.resume()
    node.settle()
    assert all(code == 0 or (out or {}).get("code") == 11 for _, _, code, out in results), results
    assert_failed_adds_left_nothing(node, failed)
    node.burst([("DEL", cid, False) for cid in undeleted] or [("DEL", next(iter(node.pods)), False)])
    node.settle()
    node.assert_invariants()
    if any(code != 0 for *_, code, _ in results):
        status = subprocess.run(["ip", "netns", "exec", node.name, os.path.join(os.path.dirname(sys.executable),
                                 "vnetctl"), "status", "--state-dir", node.sd], capture_output=True, text=True)
        assert "failed by deadline since vnetd started" in status.stdout, status.stdout + status.stderr
    node.clean_up_and_check()
    report(node, stopped_after_s=round(delay, 3), failed_adds=len(failed))


@pytest.mark.parametrize("round_", range(3))
def test_vnetd_sigkill(node, round_):
    """vnetd killed mid-burst: calls answer (code 11, or in-process once the socket is dead);
    after a restart and the runtime's DEL of every sandbox whose ADD failed, nothing is left
    over and no address is on two pods."""
    daemon = start_vnetd(node)
    rng = random.Random(100 + round_)
    delay = rng.uniform(0.01, 0.15)
    results, failed, undeleted = fault_burst(node, rng, lambda: (time.sleep(delay), daemon.kill()))
    start_vnetd(node)
    runtime_cleans_up(node, results, failed, undeleted)
    report(node, killed_after_s=round(delay, 3), failed_adds=len(failed))


@pytest.mark.parametrize("round_", range(2))
def test_vnetd_restart(node, round_):
    """vnetd restarted (SIGTERM, then a new one) mid-burst: calls in flight finish or answer
    code 11, later ones go in-process or to the new vnetd; no leak, no duplicate."""
    daemon = start_vnetd(node)
    rng = random.Random(200 + round_)
    delay = rng.uniform(0.01, 0.15)

    def restart():
        time.sleep(delay)
        daemon.stop()
        start_vnetd(node)

    results, failed, undeleted = fault_burst(node, rng, restart)
    runtime_cleans_up(node, results, failed, undeleted)
    report(node, restarted_after_s=round(delay, 3), failed_adds=len(failed))


def test_vnetd_stopped_then_continued(node):
    """The issue's scenario: `kill -STOP` vnetd, an ADD times out at the front door (code 11 within
    its deadline), `kill -CONT`: vnetd does not carry it out; no allocation, veth or record."""
    daemon = start_vnetd(node)
    (cid,) = node.new_pods(1, "st")
    daemon.pause()
    try:
        code, out = node.call("ADD", cid)
    finally:
        daemon.resume()
    assert code == 1 and out["code"] == 11 and "vnetd" in out["msg"], out
    assert node.log.calls[-1].elapsed < VNETD_TIMEOUT + 2
    node.settle()
    wait_for(lambda: any(r.get("container") == cid for r in daemon.served()), what="vnetd to get to the call")
    assert not node.traces(cid), node.traces(cid)
    served = [r for r in daemon.served() if r.get("container") == cid]
    assert served[-1].get("deadline_missed") == "expired", served
    status = subprocess.run(["ip", "netns", "exec", node.name, os.path.join(os.path.dirname(sys.executable), "vnetctl"),
                             "status", "--state-dir", node.sd], capture_output=True, text=True)
    assert "1 call(s) failed by deadline" in status.stdout and "1 expired" in status.stdout, status.stdout
    node.clean_up_and_check()
    report(node)
