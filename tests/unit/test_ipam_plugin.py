"""The vnet-ipam handlers in-process, with a fake metadata source and a fake clock: results,
idempotence, the refresh rate limit (also while failing), carrying on from the last good pool,
CHECK / STATUS / GC, and the cheap import path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from vnetcni.cni import dispatch
from vnetcni.cni.config import parse_netconf
from vnetcni.cni.errors import CNIError
from vnetcni.cni.invocation import Invocation
from vnetcni.ipam.metadata import MetadataError, render_node
from vnetcni.ipam.plugin import IpamPlugin, refresh_pool
from vnetcni.ipam.sources import FakeMetadataSource
from vnetcni.ipam.store import IpamStore
from support.statefiles import load_state

SECONDARIES = [f"10.240.0.{i}" for i in range(36, 66)]
XML = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", SECONDARIES)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self, state_dir: str, **ipam) -> None:
        self.state_dir = state_dir
        self.clock = Clock()
        self.source = FakeMetadataSource(XML)
        self.ipam = {"type": "vnet-ipam", "stateDir": state_dir, **ipam}
        self.plugin = IpamPlugin(source_factory=lambda cfg: self.source, clock=self.clock)

    def conf(self, version: str = "1.1.0", name: str = "vntnet", **extra):
        return parse_netconf({"cniVersion": version, "name": name, "type": "vnet", "ipam": self.ipam, **extra})

    @staticmethod
    def inv(command: str, cid: str = "", ifname: str = "eth0", args: dict | None = None) -> Invocation:
        return Invocation(command=command, container_id=cid, ifname=ifname, args=args or {},
                          netns="/run/netns/x" if command in ("ADD", "CHECK") else "")

    def add(self, cid: str, **kw) -> str:
        return self.plugin.add(self.inv("ADD", cid, **{k: v for k, v in kw.items() if k in ("ifname", "args")}),
                               self.conf(**{k: v for k, v in kw.items() if k == "name"})).ips[0].address

    def delete(self, cid: str, name: str = "vntnet") -> None:
        self.plugin.delete(self.inv("DEL", cid), self.conf(name=name))

    def state(self):
        return IpamStore(self.state_dir).read()

    def raw(self) -> bytes:
        with open(os.path.join(self.state_dir, "ipam.json"), "rb") as f:
            return f.read()


@pytest.fixture
def node(state_dir) -> Node:
    return Node(state_dir)


def test_add_result(node):
    res = node.plugin.add(node.inv("ADD", "a"), node.conf())
    assert res.to_dict("1.1.0") == {
        "cniVersion": "1.1.0", "interfaces": [],
        "ips": [{"address": "10.240.0.36/16", "gateway": "10.240.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.240.0.1"}], "dns": {}}


def test_configured_routes_and_dns(state_dir):
    node = Node(state_dir, routes=[{"dst": "0.0.0.0/0"}], dns={"nameservers": ["168.63.129.16"]})
    res = node.plugin.add(node.inv("ADD", "a"), node.conf()).to_dict("1.0.0")
    assert res["routes"] == [{"dst": "0.0.0.0/0"}] and res["dns"] == {"nameservers": ["168.63.129.16"]}


def test_result_in_the_requested_version_through_dispatch(node):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "a", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}
    stdin = json.dumps({"cniVersion": "0.3.1", "name": "vntnet", "type": "bridge", "ipam": node.ipam}).encode()
    out, code = dispatch.run(node.plugin, env, stdin)
    assert code == 0
    assert json.loads(out)["ips"] == [{"version": "4", "address": "10.240.0.36/16", "gateway": "10.240.0.1"}]


def test_allocation_is_keyed_by_network_container_and_interface(node):
    a = node.add("a", args={"K8S_POD_NAME": "web-0", "K8S_POD_NAMESPACE": "shop"})
    assert node.add("a") == a
    assert node.add("a", ifname="net1") != a
    assert node.add("a", name="other") not in (a,)
    alloc = node.state().allocations["vntnet/a/eth0"]
    assert (alloc.address, alloc.pod, alloc.container_id, alloc.ifname, alloc.network) == (
        a, "shop/web-0", "a", "eth0", "vntnet")
    doc = load_state(os.path.join(node.state_dir, "ipam.json"))
    assert doc["allocations"]["vntnet/a/eth0"]["allocated"].startswith("2023-11-14T22:13:20")  # ISO 8601


def test_del_is_idempotent_and_needs_no_netns_nor_prev_result(node):
    node.add("a")
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "a", "CNI_NETNS": "", "CNI_IFNAME": "eth0"}
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "vntnet", "type": "bridge", "ipam": node.ipam}).encode()
    for _ in range(2):
        out, code = dispatch.run(node.plugin, env, stdin)
        assert (out, code) == (b"", 0)
    assert node.state().allocations == {}


def test_del_on_a_node_that_never_allocated(tmp_path):
    node = Node(str(tmp_path / "never"))
    node.delete("a")
    assert not os.path.exists(os.path.join(node.state_dir, "ipam.json"))


def test_exhaustion_error_and_no_state_change(node):
    addresses = {node.add(f"c{i}") for i in range(30)}
    assert len(addresses) == 30 and "10.240.0.35/16" not in addresses
    before = node.raw()
    node.clock.now += 1
    with pytest.raises(CNIError) as info:
        node.add("c30")
    assert (info.value.code, info.value.msg) == (100, "no address available on this node: 30 of 30 in use")
    assert node.raw() == before


def test_delete_then_add_reuses_only_when_nothing_else_is_free(node):
    first = [node.add(f"c{i}") for i in range(29)]
    node.delete("c0")
    node.clock.now += 1
    assert node.add("n1") == "10.240.0.65/16"  # the never-used one, not the just-freed .36
    assert node.add("n2") == first[0]  # nothing else free: the cooling one goes


def test_refresh_is_rate_limited_per_attempt(node):
    node.add("a")
    assert node.source.calls == 1
    node.clock.now += 5
    node.add("b")
    assert node.source.calls == 1
    node.clock.now += 5
    node.add("c")
    assert node.source.calls == 2
    node.add("a")  # a repeated ADD never queries
    assert node.source.calls == 2


def test_failures_are_rate_limited_too_and_never_learned_is_code_11(node):
    node.source.answer = MetadataError("connection refused")
    for step in (0, 3, 6):
        node.clock.now += step
        with pytest.raises(CNIError) as info:
            node.add("a")
        assert info.value.code == 11 and "connection refused" in info.value.msg
    assert node.source.calls == 1
    assert node.state().allocations == {}
    node.clock.now += 1  # 10 s after the first attempt
    node.source.answer = XML
    assert node.add("a") == "10.240.0.36/16"
    assert node.source.calls == 2


@pytest.mark.parametrize("failure", [MetadataError("timed out"), b"<html>502</html>", b"\x00garbage",
                                     b"<Interfaces/>", OSError("boom")],
                         ids=["down", "html", "garbage", "empty list", "source bug"])
def test_allocation_continues_from_the_last_good_pool(node, failure):
    node.add("a")
    node.source.answer = failure
    node.clock.now += 11
    assert node.add("b") == "10.240.0.37/16"
    state = node.state()
    assert state.refresh.last_error and len(state.pool.addresses) == 30
    assert node.source.calls == 2
    node.source.answer = XML
    node.clock.now += 11
    node.add("c")
    assert node.state().refresh.last_error == ""


def test_clock_going_back_does_not_freeze_refreshes(node):
    node.add("a")
    node.clock.now -= 3600
    node.add("b")
    assert node.source.calls == 2


def test_a_claim_made_after_this_process_read_the_clock_is_not_the_clock_going_back(state_dir):
    """Two plugin processes on a fresh node: B reads the clock, then A claims and finishes the
    attempt, then B takes the lock. A's claim is later than B's first reading, which must not
    look like the clock going back (that asked the metadata twice in CI)."""
    source = FakeMetadataSource(XML)
    real = [1_700_000_000.0]

    def tick() -> float:  # the wall clock: it only moves forward
        real[0] += 0.001
        return real[0]

    def factory_for_b(cfg):
        first = refresh_pool({"stateDir": state_dir}, source_factory=lambda cfg: source, clock=tick)
        assert first.attempted and first.ok
        return source

    second = refresh_pool({"stateDir": state_dir}, source_factory=factory_for_b, clock=tick)
    assert not second.attempted and second.pool is not None and source.calls == 1


def test_refresh_on_add_false_queries_only_without_a_pool(state_dir):
    node = Node(state_dir)
    node.plugin = IpamPlugin(source_factory=lambda cfg: node.source, clock=node.clock, refresh_on_add=False)
    node.add("a")
    node.clock.now += 100
    node.add("b")
    assert node.source.calls == 1


def test_metadata_dropping_a_held_address_quarantines_it(node):
    held = node.add("a")
    node.source.answer = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", SECONDARIES[1:] + ["10.240.0.99"])
    node.clock.now += 11
    node.add("b")
    assert [q.key for q in node.state().quarantined()] == ["vntnet/a/eth0"]
    with pytest.raises(CNIError) as info:
        node.plugin.check(node.inv("CHECK", "a"), node.conf())
    assert info.value.code == 103 and "quarantined" in info.value.msg
    node.delete("a")
    state = node.state()
    assert held.split("/")[0] not in state.pool.addresses and held.split("/")[0] not in state.cooling
    got = {node.add(f"x{i}") for i in range(29)}
    assert held not in got and "10.240.0.99/16" in got


def test_check(node):
    addr = node.add("a")
    node.plugin.check(node.inv("CHECK", "a"), node.conf())
    prev = {"cniVersion": "1.0.0", "ips": [{"address": addr}]}
    node.plugin.check(node.inv("CHECK", "a"), node.conf(prevResult=prev))
    with pytest.raises(CNIError) as info:
        node.plugin.check(node.inv("CHECK", "a"), node.conf(prevResult={"ips": [{"address": "10.240.0.50/16"}]}))
    assert info.value.code == 103
    with pytest.raises(CNIError) as info:
        node.plugin.check(node.inv("CHECK", "nobody"), node.conf())
    assert info.value.code == 3


def test_status(node):
    node.source.answer = MetadataError("no route to host")
    with pytest.raises(CNIError) as info:
        node.plugin.status(node.inv("STATUS"), node.conf())
    assert info.value.code == 50 and "no route to host" in info.value.msg
    node.clock.now += 10
    node.source.answer = XML
    node.plugin.status(node.inv("STATUS"), node.conf())  # learnable now
    node.source.answer = MetadataError("down again")
    node.clock.now += 10
    node.plugin.status(node.inv("STATUS"), node.conf())  # a known pool is enough


def test_status_and_gc_through_dispatch_need_1_1_0(node):
    env = {"CNI_COMMAND": "STATUS"}
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "vntnet", "type": "bridge", "ipam": node.ipam}).encode()
    out, code = dispatch.run(node.plugin, env, stdin)
    assert code == 1 and json.loads(out)["code"] == 1


def test_gc_releases_only_this_networks_unlisted_attachments(node):
    for cid in ("a", "b", "c"):
        node.add(cid)
    node.add("a", name="other")
    valid = [{"containerID": "a", "ifname": "eth0"}, {"containerID": "c", "ifname": "eth0"}]
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"}
    stdin = json.dumps({"cniVersion": "1.1.0", "name": "vntnet", "type": "bridge", "ipam": node.ipam,
                        "cni.dev/valid-attachments": valid}).encode()
    out, code = dispatch.run(node.plugin, env, stdin)
    assert (out, code) == (b"", 0)
    assert sorted(node.state().allocations) == ["other/a/eth0", "vntnet/a/eth0", "vntnet/c/eth0"]


def test_refresh_pool_api_for_vnetd(state_dir):
    source = FakeMetadataSource(XML)
    clock = Clock()
    whole = {"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet", "stateDir": state_dir,
             "ipam": {"type": "vnet-ipam"}}
    outcome = refresh_pool(whole, source_factory=lambda cfg: source, clock=clock)
    assert outcome.attempted and outcome.ok and len(outcome.pool.addresses) == 30
    again = refresh_pool(parse_netconf(whole), source_factory=lambda cfg: source, clock=clock)
    assert not again.attempted and again.pool == outcome.pool and source.calls == 1
    source.answer = MetadataError("down")
    clock.now += 10
    failed = refresh_pool({"stateDir": state_dir}, source_factory=lambda cfg: source, clock=clock)
    assert failed.attempted and not failed.ok and failed.error == "down" and failed.pool == outcome.pool


def test_a_caller_without_pool_waits_for_an_attempt_in_flight(state_dir):
    store = IpamStore(state_dir)
    with store.transaction() as state:  # another process claimed the attempt, has no answer yet
        state.refresh.last_attempt = time.time()
        state.refresh.source = "elsewhere"
    source = FakeMetadataSource(XML)

    def finish_elsewhere():
        time.sleep(0.2)
        refresh_pool({"stateDir": state_dir, "refreshSeconds": 0}, source_factory=lambda cfg: source)

    helper = threading.Thread(target=finish_elsewhere)
    helper.start()
    try:
        outcome = refresh_pool({"stateDir": state_dir}, source_factory=lambda cfg: source)
    finally:
        helper.join()
    assert not outcome.attempted and outcome.pool is not None and source.calls == 1


def test_plugin_import_stays_light():
    code = ("import sys, vnetcni.plugins.ipam_main; print(','.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                 .stdout.strip().split(","))
    heavy = {"pyroute2", "typer", "rich", "prometheus_client", "urllib.request", "http.client", "defusedxml",
             "xml.etree.ElementTree", "ipaddress", "vnetcni.ipam.metadata", "vnetcni.ipam.sources"}
    assert loaded & heavy == set()
