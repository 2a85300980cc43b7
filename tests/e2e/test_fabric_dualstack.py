"""A dual-stack simulated VNet, in both modes: every pod gets an IPv4 and an IPv6 address of its
own node (the metadata lists both subnets), pods talk TCP over both families across nodes,
node-local traffic of either family stays off the fabric, and trace/capture follow IPv6 flows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from conftest import require_tool
from support import resources
from vnetcni.sim import enforcement, fabric, kernel, pods, probe

VNETCTL = os.path.join(os.path.dirname(sys.executable), "vnetctl")
PREFIX = os.environ.get("VNET_SIM_TEST_PREFIX", resources.OWNER)


@pytest.fixture(scope="module", params=["bridge", "transparent"])
def dual(request, tmp_path_factory):
    require_tool("nft")
    require_tool("tcpdump")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VNET_SIM_PREFIX", PREFIX)
        root = str(tmp_path_factory.mktemp("sim"))
        mp.setenv("VNET_SIM_ROOT", root)
        name = f"s{uuid.uuid4().hex[:6]}"
        rec = fabric.up(fabric.FabricOptions(name=name, nodes=2, ips_per_node=3, subnet="10.244.0.0/24",
                                             subnet6="fd00:10:244::/64", mode=request.param,
                                             enforce_source=True))
        try:
            made = [pods.add_pod(rec, n.name, f"web-{n.name}-{i}") for n in rec.nodes for i in range(2)]
            yield rec, made, dict(os.environ)
        finally:
            fabric.down(name)


def test_every_pod_has_one_address_of_each_family_from_its_node(dual):
    rec, made, _ = dual
    for p in made:
        node = rec.node(p.node)
        assert p.address in node.secondaries and p.address6 in node.secondaries6
        six = kernel.ip(p.netns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global").stdout
        assert p.address6 in six and "tentative" not in six
        assert [ip.get("version") for ip in p.result["ips"]] == [None, None]  # 1.0.0 results


def test_tcp_over_both_families_across_nodes(dual):
    rec, made, _ = dual
    failures = []
    for s in made:
        for d in made:
            if s.node != d.node:
                for address in (d.address, d.address6):
                    t = probe.tcp(s.netns, d.netns, address)
                    if not t.ok:
                        failures.append(f"{s.name} -> {d.name} {address}: {t.detail}")
        pg = probe.ping(s.netns, rec.gateway6)
        if not pg.ok:
            failures.append(f"{s.name} -> {rec.gateway6}: {pg.detail}")
    assert failures == []
    assert all(c["spoofed_from"] == 0 for c in enforcement.counters(rec).values())


def test_node_local_traffic_of_either_family_never_crosses_the_fabric(dual):
    rec, made, _ = dual
    before = enforcement.counters(rec)
    for node in rec.nodes:
        a, b = [p for p in made if p.node == node.name]
        for address in (b.address6, b.address):
            assert probe.tcp(a.netns, b.netns, address).ok
            assert probe.ping(a.netns, address).ok
    assert enforcement.counters(rec) == before
    s, d = made[0], made[-1]
    assert s.node != d.node and probe.tcp(s.netns, d.netns, d.address6).ok
    after = enforcement.counters(rec)
    assert after[s.node]["ipv6_from"] > before[s.node]["ipv6_from"]
    assert after[d.node]["ipv6_to"] > before[d.node]["ipv6_to"]
    assert after[s.node]["ipv4_from"] == before[s.node]["ipv4_from"]  # the IPv6 flow was counted as such


def test_trace_and_capture_follow_an_ipv6_flow(dual):
    rec, made, env = dual
    s, d = made[0], made[-1]
    out = subprocess.run([VNETCTL, "trace", s.name, "--fabric", rec.name, "--to", d.address6, "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    report = json.loads(out.stdout)
    assert report["source"]["address"] == s.address6 and report["destination"]["pod"] == f"default/{d.name}"
    assert report["complete"] and all(h["forward"] and h["reply"] for h in report["hops"]), report["hops"]
    assert [h["role"] for h in report["hops"]][0] == "pod veth" and report["hops"][-1]["interface"] == d.host_ifname

    cap = subprocess.Popen([VNETCTL, "capture", d.name, "--fabric", rec.name, "-f", f"icmp6 and host {s.address6}",
                            "-c", "2", "-d", "60", "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = b""
        while b"listening on" not in line:
            line = cap.stderr.readline()
            assert line, "vnetctl capture ended before listening"
        assert probe.ping(s.netns, d.address6).ok
        pcap, _ = cap.communicate(timeout=60)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    shown = subprocess.run(["tcpdump", "-nn", "-r", "-"], input=pcap, capture_output=True, timeout=30).stdout.decode()
    assert f"{s.address6} > {d.address6}: ICMP6, echo request" in shown, shown
    assert f"{d.address6} > {s.address6}: ICMP6, echo reply" in shown, shown
