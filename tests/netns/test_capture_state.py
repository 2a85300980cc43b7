"""`vnetctl capture` on pods found through vnet's endpoint records (hand-made nodes, and a pod
made by the real vnet plugin): exact packets, stdout pcap, --in-pod, Ctrl-C, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import require_tool
from support.cni import run_plugin
from vnetcni.capture import pcap

from netns.test_capture_topology import (VNETCTL, CliRun, add_pod, make_node, ping, read_back, run_cli,
                                         tcp_exchange, tcp_refused, wait_records, write_fabric)


@pytest.fixture
def node(namespaces, tmp_path):
    require_tool("tcpdump")
    n = make_node(namespaces, str(tmp_path / "state"))
    n.fabric = write_fabric(str(tmp_path / "fabric.json"), [n])
    return n


def where(node) -> list[str]:
    return ["--fabric", node.fabric, "--node", node.name]


def capture(node, pod_query, out, *extra):
    run = CliRun("capture", pod_query, *where(node), "-o", out, "-d", "60", "-c", "1000", *extra)
    try:
        run.wait_for("listening on")
    except BaseException:
        run.kill()
        raise
    return run


def stop(run) -> int:
    try:
        run.interrupt()
        return run.wait()
    finally:
        run.kill()


@pytest.mark.parametrize("query", ["web-1", "default/web-1", "10.99.0.5", "CID"])
def test_capture_holds_exactly_the_connection(namespaces, node, tmp_path, query):
    pod = add_pod(namespaces, node, "web-1", "10.99.0.5")
    add_pod(namespaces, node, "web-2", "10.99.0.6")
    out = str(tmp_path / "web1.pcap")
    query = pod.container_id[:10] if query == "CID" else query
    run = capture(node, query, out, "-f", "tcp port 8080")
    ping(node.netns_name, pod.address)                                      # not TCP
    tcp_refused(node.netns, node.address, pod.address, 9090)                # another port
    tcp_exchange(node.netns, node.address, node.pods[1].netns, "10.99.0.6", 8080)  # another pod
    client_port = tcp_exchange(node.netns, node.address, pod.netns, pod.address, 8080)
    wait_records(out, 4)
    assert stop(run) == 0, run.stderr
    rows = read_back(out)
    forward = (node.address, client_port, pod.address, 8080)
    backward = (pod.address, 8080, node.address, client_port)
    assert [r[:4] for r in rows] == [forward, backward, forward, forward]
    assert [r[4] for r in rows] == ["S", "S.", ".", "R."]
    assert "found by endpoint state" in run.stderr
    assert f"host interface {pod.host_if}" in run.stderr
    assert "wrote 4 packets" in run.stderr


def test_capture_to_stdout_is_pure_pcap(namespaces, node, tmp_path):
    pod = add_pod(namespaces, node, "web-1", "10.99.0.5")
    out = tmp_path / "stdout.pcap"
    with open(out, "wb") as f:
        run = CliRun("capture", "web-1", *where(node), "-o", "-", "-c", "2", "-d", "60", "-f", "icmp",
                     stdout=f)
        try:
            run.wait_for("listening on")
            ping(node.netns_name, pod.address)
            assert run.wait() == 0, run.stderr
        finally:
            run.kill()
    capture_file = pcap.read_pcap_path(str(out))
    assert capture_file.linktype == pcap.LINKTYPE_ETHERNET
    decoded = [pcap.decode(r) for r in capture_file.records]
    assert [(p.src, p.dst, p.proto) for p in decoded] == [
        (node.address, pod.address, "icmp"), (pod.address, node.address, "icmp")]
    assert "wrote 2 packets to stdout" in run.stderr
    shown = subprocess.run(["tcpdump", "-nn", "-r", "-"], stdin=open(out, "rb"), capture_output=True,
                           text=True, timeout=30)
    assert shown.returncode == 0 and shown.stdout.count("ICMP echo") == 2


def test_duration_bounds_an_idle_capture(namespaces, node, tmp_path):
    add_pod(namespaces, node, "web-1", "10.99.0.5")
    out = str(tmp_path / "idle.pcap")
    result = run_cli("capture", "web-1", *where(node), "-o", out, "-d", "0.5", "-f", "udp port 9")
    assert result.returncode == 0, result.stderr
    assert "wrote 0 packets" in result.stderr
    assert pcap.read_pcap_path(out).records == []


def test_in_pod_captures_inside_a_namespace_without_tools(namespaces, node, tmp_path):
    pod = add_pod(namespaces, node, "web-1", "10.99.0.5")
    out = str(tmp_path / "inpod.pcap")
    run = capture(node, "web-1", out, "--in-pod", "-f", "tcp port 8080")
    client_port = tcp_exchange(node.netns, node.address, pod.netns, pod.address, 8080)
    wait_records(out, 4)
    assert stop(run) == 0, run.stderr
    assert [r[1] for r in read_back(out)] == [client_port, 8080, client_port, client_port]
    assert f"eth0 inside pod default/web-1 (netns {pod.netns})" in run.stderr


def test_unknown_pod_is_a_clear_error(namespaces, node, tmp_path):
    add_pod(namespaces, node, "web-1", "10.99.0.5")
    result = run_cli("capture", "nosuch", *where(node), "-o", str(tmp_path / "x.pcap"), "-c", "1")
    assert result.returncode == 3
    assert "unknown pod 'nosuch'" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "x.pcap")


def test_pod_on_another_node_names_that_node(namespaces, tmp_path):
    require_tool("tcpdump")
    n1 = make_node(namespaces, str(tmp_path / "s1"), "n1")
    n2 = make_node(namespaces, str(tmp_path / "s2"), "n2")
    add_pod(namespaces, n2, "web-9", "10.99.0.9")
    fabric = write_fabric(str(tmp_path / "fabric.json"), [n1, n2])
    result = run_cli("capture", "web-9", "--fabric", fabric, "--node", "n1", "-c", "1", "-o",
                     str(tmp_path / "x.pcap"))
    assert result.returncode == 3
    assert "pod web-9 runs on node n2, not on n1" in result.stderr
    assert "--node n2" in result.stderr


def test_ambiguous_name_asks_for_the_namespace(namespaces, node, tmp_path):
    add_pod(namespaces, node, "web", "10.99.0.5", pod_namespace="a")
    add_pod(namespaces, node, "web", "10.99.0.6", pod_namespace="b")
    result = run_cli("capture", "web", *where(node), "-c", "1", "-o", str(tmp_path / "x.pcap"))
    assert result.returncode == 2 and "-n NAMESPACE" in result.stderr
    run = capture(node, "web", str(tmp_path / "b.pcap"), "-n", "b")
    assert stop(run) == 0
    assert "pod b/web" in run.stderr


def test_filter_syntax_error_reports_tcpdumps_message(namespaces, node, tmp_path):
    add_pod(namespaces, node, "web-1", "10.99.0.5")
    result = run_cli("capture", "web-1", *where(node), "-f", "tcp port", "-o", str(tmp_path / "x.pcap"))
    assert result.returncode == 2
    assert "can't parse filter expression: syntax error" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_tcpdump_and_missing_privileges(namespaces, node, tmp_path):
    add_pod(namespaces, node, "web-1", "10.99.0.5")
    missing = run_cli("capture", "web-1", *where(node), "-o", str(tmp_path / "x.pcap"),
                      env={"VNETCNI_TCPDUMP": str(tmp_path / "no-tcpdump")})
    assert missing.returncode == 5 and "tcpdump is not installed" in missing.stderr
    # Root's uid without root's capabilities: what an unprivileged user has (and the files
    # stay readable wherever CI checked the project out).
    nobody = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", VNETCTL, "capture",
                             "web-1", "--state-dir", node.state_dir, "-o", "-"],
                            capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 4, nobody.stderr
    assert "needs root" in nobody.stderr and "Traceback" not in nobody.stderr


def test_capture_of_a_pod_made_by_the_vnet_plugin(node_ns, pod_ns, tmp_path):
    """The real `vnet` plugin makes the pod and its record; the capture finds it by name."""
    require_tool("tcpdump")
    bin_dir = os.path.dirname(VNETCTL)
    vnet = require_tool(os.path.join(bin_dir, "vnet"))
    state, pod_name_ns = str(tmp_path / "state"), pod_ns()
    conf = {"cniVersion": "1.0.0", "name": "vnt", "type": "vnet", "bridge": "azure0", "stateDir": state,
            "ipam": {"type": "host-local", "subnet": "10.99.0.0/24", "gateway": "10.99.0.1",
                     "dataDir": str(tmp_path / "ipam")}}
    added = run_plugin(vnet, "ADD", conf, node=node_ns, container_id=os.urandom(32).hex(),
                       netns=pod_name_ns[1], cni_path=f"/usr/lib/cni:{bin_dir}",
                       args="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1")
    assert added.ok, added.stderr or added.out
    address = added.out["ips"][0]["address"].split("/")[0]
    fabric = str(tmp_path / "fabric.json")
    with open(fabric, "w") as f:
        json.dump({"name": "vntplug", "nodes": [{"name": "n1", "netns": node_ns, "stateDir": state}]}, f)
    out = str(tmp_path / "vnet.pcap")
    run = CliRun("capture", "web-1", "-n", "shop", "--fabric", fabric, "--node", "n1", "-o", out,
                 "-f", f"tcp and host {address}", "-c", "100", "-d", "60")
    try:
        run.wait_for("listening on")
        client_port = tcp_exchange(f"/run/netns/{node_ns}", "10.99.0.1", pod_name_ns[1], address, 8080)
        wait_records(out, 4)
    finally:
        code = stop(run)
    assert code == 0, run.stderr
    fwd, back = ("10.99.0.1", client_port, address, 8080), (address, 8080, "10.99.0.1", client_port)
    rows = read_back(out)
    assert [r[:4] for r in rows] == [fwd, back, fwd, fwd]
    assert [r[4] for r in rows] == ["S", "S.", ".", "R."]
    assert "pod shop/web-1: host interface azv" in run.stderr and "found by endpoint state" in run.stderr
    assert "wrote 4 packets" in run.stderr


def test_no_tcpdump_outlives_a_killed_vnetctl(namespaces, node, tmp_path):
    add_pod(namespaces, node, "web-1", "10.99.0.5")
    run = capture(node, "web-1", str(tmp_path / "k.pcap"))
    try:
        children = open(f"/proc/{run.proc.pid}/task/{run.proc.pid}/children").read().split()
        assert len(children) == 1
        tcpdump = int(children[0])
        assert "tcpdump" in open(f"/proc/{tcpdump}/cmdline").read()
        run.proc.kill()
        run.wait()
        for _ in range(300):  # its parent-death signal stops it: wait (bounded) until it is gone
            try:
                with open(f"/proc/{tcpdump}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except FileNotFoundError:
                break
            time.sleep(0.05)
        else:
            os.kill(tcpdump, 9)
            raise AssertionError("tcpdump kept running after vnetctl was killed")
    finally:
        run.kill()
