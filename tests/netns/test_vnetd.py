"""vnetd: the daemon path equals the in-process path; a restart mid-burst leaves no half state;
stale sockets and a second daemon are handled."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from support.cni import links, metadata_xml, run_plugin, wait_for
from support.vnetd import VNETD, Daemon, wait_for_teardowns
from support.statefiles import load_state


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def make(node, state_dir, log):
        d = Daemon(node, state_dir, log)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def pool_file(tmp_path, n=30):
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 36 + n)]))
    return str(md)


def conf_for(state_dir, md, version="1.0.0"):
    return {"cniVersion": version, "name": "vntnet", "type": "vnet", "bridge": "vntbr0", "stateDir": state_dir,
            "ipam": {"type": "vnet-ipam", "metadataFile": md, "reuseCooldownSeconds": 0}}


def masked(result: dict) -> dict:
    out = json.loads(json.dumps(result))
    for iface in out.get("interfaces", []):
        iface.pop("mac", None)
        iface.pop("sandbox", None)
    return out


def ipam_allocations(state_dir) -> dict[str, str]:
    doc = load_state(os.path.join(state_dir, "ipam.json"))
    return {a["containerId"]: a["address"] for a in doc["allocations"].values()}


def endpoint_view(state_dir) -> dict:
    eps = load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"]
    assert all(e["ipamStateDir"] == state_dir for e in eps.values())  # where the address was allocated
    return {k: {f: v for f, v in e.items()
                if f not in ("mac", "hostMac", "bridgeMac", "netns", "created", "ipamStateDir")}
            for k, e in eps.items()}


def test_daemon_and_in_process_give_identical_results_and_state(cni_bin, namespaces, pod_ns, tmp_path, daemons):
    md = pool_file(tmp_path)
    vnet = os.path.join(cni_bin, "vnet")
    outcomes = {}
    for mode in ("daemon", "in-process"):
        node = namespaces.make("node")
        sd = str(tmp_path / mode)
        os.makedirs(sd)
        d = daemons(node, sd, str(tmp_path / f"{mode}.log"))
        if mode == "daemon":
            d.start()
        conf = conf_for(sd, md)
        results = []
        pods = [pod_ns() for _ in range(5)]
        for i, (_, path) in enumerate(pods):
            r = run_plugin(vnet, "ADD", conf, node=node, container_id=f"ctr{i}", netns=path, cni_path=cni_bin,
                           args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-{i}")
            assert r.ok, r
            results.append(masked(r.out))
        for i in (1, 3):
            assert run_plugin(vnet, "DEL", conf, node=node, container_id=f"ctr{i}", netns="", cni_path=cni_bin).ok
        r = run_plugin(vnet, "CHECK", conf, node=node, container_id="ctr0", netns=pods[0][1], cni_path=cni_bin)
        assert r.ok, r
        bad = run_plugin(vnet, "ADD", dict(conf, mtu=5), node=node, container_id="x", netns=pods[0][1],
                         cni_path=cni_bin)
        wait_for_teardowns(sd)  # vnetd answers a DEL before its veth is gone; its reaper finishes it
        outcomes[mode] = (results, ipam_allocations(sd), endpoint_view(sd), bad.code, bad.out)
        served = d.served()
        if mode == "daemon":
            assert [r["verb"] for r in served] == ["ADD"] * 5 + ["DEL", "DEL", "CHECK", "ADD"]
            assert served[-1]["result"] == "error" and served[-1]["code"] == 7
        else:
            assert served == [] and not os.path.exists(os.path.join(sd, "vnetd.sock"))
        for i in (0, 2, 4):
            assert run_plugin(vnet, "DEL", conf, node=node, container_id=f"ctr{i}", netns="", cni_path=cni_bin).ok
    assert outcomes["daemon"] == outcomes["in-process"]


def test_daemon_restart_mid_burst_leaves_no_half_state(cni_bin, node_ns, pod_ns, tmp_path, state_dir, daemons):
    md = pool_file(tmp_path)
    conf = conf_for(state_dir, md)
    vnet = os.path.join(cni_bin, "vnet")
    log = str(tmp_path / "vnetd.log")
    first = daemons(node_ns, state_dir, log).start()
    pods = [pod_ns() for _ in range(24)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    procs = []
    for i, (_, path) in enumerate(pods):
        e = dict(env, CNI_COMMAND="ADD", CNI_CONTAINERID=f"ctr{i}", CNI_NETNS=path, CNI_IFNAME="eth0",
                 CNI_PATH=cni_bin, CNI_ARGS="IgnoreUnknown=1")
        p = subprocess.Popen(["ip", "netns", "exec", node_ns, vnet], env=e, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        p.stdin.write(json.dumps(conf).encode())
        p.stdin.close()
        procs.append(p)
    wait_for(lambda: len(first.served()) >= 3, what="a few requests served")
    first.kill()  # mid-burst: some requests done, some in flight, some not yet sent
    second = daemons(node_ns, state_dir, log).start()  # replaces the stale socket
    codes = {}
    for i, p in enumerate(procs):
        out = p.stdout.read()
        p.wait(60)
        p.stdout.close()
        answer = json.loads(out) if out.strip() else {}
        codes[i] = 0 if p.returncode == 0 else answer.get("code")
    assert set(codes.values()) <= {0, 11}, codes
    # the runtime retries what failed with "try again later"
    for i, code in codes.items():
        if code == 11:
            r = run_plugin(vnet, "ADD", conf, node=node_ns, container_id=f"ctr{i}", netns=pods[i][1],
                           cni_path=cni_bin)
            assert r.ok, r
    eps = load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"]
    allocs = ipam_allocations(state_dir)
    assert sorted(allocs) == sorted(f"ctr{i}" for i in range(24))
    assert len(set(allocs.values())) == 24
    assert {e["containerId"]: e["ips"][0] for e in eps.values()} == allocs
    assert sorted(l for l in links(node_ns) if l.startswith("azv")) == sorted(e["hostIfName"] for e in eps.values())
    for i in range(24):
        assert run_plugin(vnet, "DEL", conf, node=node_ns, container_id=f"ctr{i}", netns="", cni_path=cni_bin).ok
    wait_for_teardowns(state_dir)
    assert ipam_allocations(state_dir) == {} and endpoint_view(state_dir) == {}
    assert not [l for l in links(node_ns) if l.startswith("azv")]
    assert second.served(), "the restarted daemon served the retries"


def test_stale_socket_and_second_daemon(cni_bin, node_ns, pod_ns, tmp_path, state_dir, daemons):
    md = pool_file(tmp_path)
    conf = conf_for(state_dir, md)
    vnet = os.path.join(cni_bin, "vnet")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(os.path.join(state_dir, "vnetd.sock"))  # a socket file nobody listens on
    stale.close()
    _, path = pod_ns()
    r = run_plugin(vnet, "ADD", conf, node=node_ns, container_id="ctr0", netns=path, cni_path=cni_bin)
    assert r.ok, r  # nobody listening: the front door works in-process
    d = daemons(node_ns, state_dir, str(tmp_path / "log")).start()  # replaces the stale file
    again = subprocess.run(["ip", "netns", "exec", node_ns, VNETD, "--state-dir", state_dir],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "another vnetd is running" in again.stderr
    r = run_plugin(vnet, "DEL", conf, node=node_ns, container_id="ctr0", netns="", cni_path=cni_bin)
    assert r.ok and [x["verb"] for x in d.served()] == ["DEL"]
    d.stop()
    assert not os.path.exists(os.path.join(state_dir, "vnetd.sock"))


def test_daemon_in_another_namespace_is_not_used(cni_bin, namespaces, pod_ns, tmp_path, state_dir, daemons):
    """A caller in another network namespace must not have its pods wired on the daemon's node."""
    md = pool_file(tmp_path)
    conf = conf_for(state_dir, md)
    d = daemons(namespaces.make("node"), state_dir, str(tmp_path / "log")).start()
    other = namespaces.make("node")
    _, path = pod_ns()
    r = run_plugin(os.path.join(cni_bin, "vnet"), "ADD", conf, node=other, container_id="ctr0", netns=path,
                   cni_path=cni_bin)
    assert r.ok, r
    assert d.served() == [] and any(l.startswith("azv") for l in links(other))
    assert run_plugin(os.path.join(cni_bin, "vnet"), "DEL", conf, node=other, container_id="ctr0", netns="",
                      cni_path=cni_bin).ok


def test_vnetd_reconciles_stale_endpoints_at_start(cni_bin, node_ns, namespaces, tmp_path, state_dir, daemons):
    md = pool_file(tmp_path)
    conf = conf_for(state_dir, md)
    gone = namespaces.make("pod")
    assert run_plugin(os.path.join(cni_bin, "vnet"), "ADD", conf, node=node_ns, container_id="ctr-gone",
                      netns=f"/run/netns/{gone}", cni_path=cni_bin).ok
    subprocess.run(["ip", "netns", "del", gone], check=True)  # as after a reboot
    namespaces.created.remove(gone)
    wait_for(lambda: not [l for l in links(node_ns) if l.startswith("azv")], what="the veth to go with its netns")
    daemons(node_ns, state_dir, str(tmp_path / "log")).start()
    assert endpoint_view(state_dir) == {} and ipam_allocations(state_dir) == {}


def test_metrics_on_loopback(cni_bin, node_ns, pod_ns, tmp_path, state_dir, daemons):
    """Prometheus metrics: requests and latency by verb and result, pool size and use, refresh age."""
    from vnetcni.dataplane.netns import entered

    md = pool_file(tmp_path)
    conf = conf_for(state_dir, md)
    daemons(node_ns, state_dir, str(tmp_path / "log")).start("--metrics-port", "19477")
    _, path = pod_ns()
    assert run_plugin(os.path.join(cni_bin, "vnet"), "ADD", conf, node=node_ns, container_id="ctr0", netns=path,
                      cni_path=cni_bin).ok
    bad = run_plugin(os.path.join(cni_bin, "vnet"), "ADD", dict(conf, mtu=1), node=node_ns, container_id="x",
                     netns=path, cni_path=cni_bin)
    assert bad.code == 1

    def scrape() -> dict[str, float]:
        with entered(f"/run/netns/{node_ns}"):
            sock = socket.create_connection(("127.0.0.1", 19477), timeout=5)
        with sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[1].decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in body.splitlines() if line and not line.startswith("#")}

    m = scrape()
    assert m['vnetd_cni_requests_total{code="0",plugin="vnet",result="ok",verb="ADD"}'] == 1
    assert m['vnetd_cni_requests_total{code="7",plugin="vnet",result="error",verb="ADD"}'] == 1
    assert m['vnetd_cni_request_duration_seconds_count{code="0",result="ok",verb="ADD"}'] == 1
    assert m[f'vnetd_pool_addresses{{state_dir="{state_dir}"}}'] == 30
    assert m[f'vnetd_pool_addresses_in_use{{state_dir="{state_dir}"}}'] == 1
    assert m["process_resident_memory_bytes"] > 0
    assert m[f'vnetd_metadata_refresh_age_seconds{{state_dir="{state_dir}"}}'] >= 0
    assert run_plugin(os.path.join(cni_bin, "vnet"), "DEL", conf, node=node_ns, container_id="ctr0", netns="",
                      cni_path=cni_bin).ok
