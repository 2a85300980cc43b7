"""vnet-cni driven the way kubelet drives it: a private containerd's CRI (RunPodSandbox calls the
CNI plugins), a kubelet stand-in speaking runtime.v1 over gRPC, one node per module. The reference
bridge + host-local run through the same stand-in, as the yardstick."""

from __future__ import annotations

import ipaddress
import threading
import json
import os
import signal
import statistics
import time
from pathlib import Path

import pytest

from conftest import Namespaces, require_tool
from support.cri_node import CRINode
from support.vnetd import wait_for_teardowns
from support.statefiles import load_state


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    for tool in ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "gcc", "busybox", "nsenter"):
        require_tool(tool)
    namespaces = Namespaces()
    n = None
    try:
        n = CRINode(namespaces, tmp_path_factory.mktemp("crinode"))
        n.start()
        yield n
    finally:
        if n is not None:
            n.stop()
        namespaces.cleanup()


@pytest.fixture
def report(capsys):
    """Figures for the note, printed in the run's output (not captured)."""

    def write(line: str) -> None:
        with capsys.disabled():
            print(f"\n[cri figures] {line}", flush=True)

    return write


SAMPLES = 10  # RunPodSandbox timings per network, sequential, one sandbox at a time


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, (time.perf_counter() - start) * 1000


def sandbox_latencies(node, label: str, check=None) -> list[float]:
    """RunPodSandbox alone (what the network adds to a pod start), SAMPLES times, each sandbox
    stopped and removed before the next; `check(sandbox_id)` runs on each while it exists."""
    out = []
    for i in range(SAMPLES):
        cfg = node.kubelet.sandbox_config(f"{label}-sb-{i}", "default", f"uid-{label}-{i}", {})
        sid, ms = timed(node.cri.run_sandbox, cfg)
        out.append(ms)
        if check is not None:
            check(sid)
        node.cri.stop_sandbox(sid)
        node.cri.remove_sandbox(sid)
    return out


def ms_summary(samples: list[float]) -> str:
    s = sorted(samples)
    return f"median {statistics.median(s):.0f} ms, min {s[0]:.0f}, max {s[-1]:.0f} (n={len(s)})"


def test_reference_bridge_host_local_through_cri(node, report):
    """The yardstick and the fixture's own proof: NetworkReady follows the conflist, pods get
    host-local addresses through RunPodSandbox, reach each other and the gateway, and Stop + Remove
    leaves no veth and no allocation."""
    assert node.cri.version().runtime_api_version == "v1"
    assert not node.cri.network_ready()
    data_dir = node.workdir / "host-local"
    node.write_conflist("10-ref.conflist", {"cniVersion": "1.0.0", "name": "vntref", "plugins": [
        {"type": "bridge", "bridge": "vntref0", "isGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]], "dataDir": str(data_dir)}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]})  # the same chain as vnet's
    try:
        node.wait_network_ready(True)
        pods, latencies = [], []
        for i in range(4):
            pod, ms = timed(node.busybox_pod, f"ref-{i}")
            pods.append(pod)
            latencies.append(ms)
        ips = [p.ip for p in pods]
        assert len(set(ips)) == 4 and all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.99.0.0/24") for ip in ips)
        assert node.ping(pods[0], "10.99.0.1")
        assert node.ping(pods[0], pods[1].ip)
        assert node.ping(pods[3], pods[2].ip)
        sandbox_ms = sandbox_latencies(node, "ref")
        report(f"reference bridge+host-local: pod start (sandbox + busybox container) {ms_summary(latencies)}")
        report(f"reference bridge+host-local: RunPodSandbox {ms_summary(sandbox_ms)}")
        for pod in pods:
            node.kubelet.delete_pod(pod)
        assert not [l for l in node.links() if l.startswith("veth")]
        leftover = [f for f in os.listdir(data_dir / "vntref") if f[0].isdigit()] if (data_dir / "vntref").exists() else []
        assert leftover == [], leftover
        assert node.sandbox_netns() == []
    finally:
        node.kubelet.delete_all()
        node.clear_conflists()
    node.wait_network_ready(False)


POOL = [f"10.240.0.{i}" for i in range(36, 41)]  # five secondary addresses: the node's max pods


def vnet_conflist(metadata_file) -> dict:
    return {"cniVersion": "1.0.0", "name": "vnet", "plugins": [
        {"type": "vnet", "bridge": "vntcri0", "stateDir": "/var/run/vnet",
         "ipam": {"type": "vnet-ipam", "metadataFile": str(metadata_file), "reuseCooldownSeconds": 0,
                  "stateDir": "/var/run/vnet"}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}


def node_state(state_dir) -> tuple[dict, dict]:
    eps = load_state(state_dir / "endpoints.json")["endpoints"]
    allocs = load_state(state_dir / "ipam.json")["allocations"]
    return eps, allocs


def test_vnet_through_vnetd_on_the_node(node, report, tmp_path):
    """vnetd run on the node by the test (no image): NetworkReady, pool addresses served by vnetd
    itself, connectivity, exhaustion, containerd's double DEL, vnetd killed and restarted with pods
    running."""
    from support.cni import metadata_xml
    from support.cri import CRIError
    from support.cri_node import NodeVnetd
    from vnetcni.plugins.install import install

    install(str(node.cni_bin))
    state = node.host / "var/run/vnet"
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", POOL))
    vnetd = NodeVnetd(node)
    assert not node.cri.network_ready()
    try:
        vnetd.start()
        node.write_conflist("10-vnet.conflist", vnet_conflist(md))
        node.wait_network_ready(True)

        pods = [node.busybox_pod(f"web-{i}") for i in range(3)]
        ips = [p.ip for p in pods]
        assert len(set(ips)) == 3 and set(ips) <= set(POOL), ips
        served = {r["container"]: r for r in vnetd.served() if r["plugin"] == "vnet"}
        assert all(served.get(p.sandbox_id, {}).get("result") == "ok" for p in pods), served  # not a fallback
        eps, allocs = node_state(state)
        assert sorted(e["ips"][0].split("/")[0] for e in eps.values()) == sorted(ips)
        assert node.ping(pods[0], "10.240.0.1")  # the gateway: the node's bridge
        assert node.ping(pods[0], ips[1]) and node.ping(pods[2], ips[0])

        sandbox_ms = sandbox_latencies(node, "vnet")
        report(f"vnet via vnetd (on the node): RunPodSandbox {ms_summary(sandbox_ms)}")

        # the pool holds five: two more fit, the sixth gets the clear exhaustion error
        pods += [node.busybox_pod(f"fill-{i}") for i in range(2)]
        start = time.monotonic()
        with pytest.raises(CRIError) as err:
            node.busybox_pod("one-too-many")
        assert "no address available on this node: 5 of 5 in use" in err.value.details, err.value.details
        assert time.monotonic() - start < 30
        assert len(node.cri.sandboxes()) == 5  # the failed sandbox is gone, nothing half made
        assert len(node_state(state)[1]) == 5

        # vnetd killed with pods running: pods keep their addresses and connectivity, state survives
        vnetd.kill()
        assert node.ping(pods[0], ips[1]) and node.ping(pods[1], "10.240.0.1")
        assert len(node_state(state)[0]) == 5
        vnetd.start()
        node.kubelet.delete_pod(pods.pop())  # make room
        again = node.busybox_pod("after-restart")
        assert again.ip in POOL and node.ping(again, ips[0])
        assert any(r["container"] == again.sandbox_id and r["result"] == "ok" for r in vnetd.served())

        # Stop + Remove (containerd's two DELs) leave nothing
        for pod in pods + [again]:
            node.kubelet.delete_pod(pod)
        wait_for_teardowns(str(state))  # vnetd answers DEL before the veth is gone; its reaper finishes
        eps, allocs = node_state(state)
        assert eps == {} and allocs == {}, (eps, allocs)
        assert not [l for l in node.links() if l.startswith("azv")]
        assert node.sandbox_netns() == []
    finally:
        node.kubelet.delete_all()
        node.clear_conflists()
        vnetd.stop()
        node.forget_vnet("vntcri0")
    node.wait_network_ready(False)


# --- the DaemonSet from deploy/, run by the kubelet stand-in ---------------------------------

@pytest.fixture(scope="module")
def agent_images(node):
    """The image built from this checkout (scripts/build-image.sh, cached) imported into the node's
    containerd, and a second tag of it for the upgrade."""
    for tool in ("mmdebstrap", "podman"):
        require_tool(tool)
    from support.daemonset import DaemonSet
    from support.image import vnet_image

    built = vnet_image()
    start = time.monotonic()
    node.containerd.import_image(Path(built.archive))
    imported = time.monotonic() - start
    first = DaemonSet(node.kubelet).images()
    assert first == {built.tag}, (first, built.tag)
    second = built.tag.rsplit(":", 1)[0] + ":upgrade"
    node.containerd.ctr("images", "tag", "--force", built.tag, second)
    return built, second, imported


def agent_log(node, pod) -> list[dict]:
    """vnetd's request log: JSON lines on the agent container's stderr, in the CRI log format."""
    out = []
    for attempt in range(pod.attempts.get("vnetd", 0) + 1):
        path = Path(pod.config.log_directory) / f"vnetd/{attempt}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(" ", 3)  # <time> <stream> <tag> <message>
            if len(parts) == 4 and parts[3].startswith("{"):
                try:
                    out.append(json.loads(parts[3]))
                except ValueError:
                    pass
    return out


def served_ok(node, pod, sandbox_id) -> bool:
    return any(r.get("verb") == "ADD" and r.get("container") == sandbox_id and r.get("result") == "ok"
               for r in agent_log(node, pod))


@pytest.fixture(scope="module")
def agent(node, agent_images):
    """The DaemonSet from deploy/ started on the node (once per module), with the node's settings
    in its ConfigMap: no metadata service here, so the pool comes from a file in the ConfigMap; a
    bridge of the test's own; no uplink (the node namespace has none to give). Yields the
    DaemonSet and what its start measured."""
    from support.cni import metadata_xml
    from support.daemonset import DaemonSet, conflist_of

    built, second_tag, imported_s = agent_images
    ds = DaemonSet(node.kubelet)
    cm = ds.config_map(next(v["configMap"]["name"] for v in ds.template["spec"]["volumes"] if "configMap" in v))
    conflist = conflist_of(cm)
    vnet = conflist["plugins"][0]
    vnet.update(bridge="vntds0")
    vnet.pop("uplink", None)
    vnet["ipam"].pop("metadataUrl", None)
    vnet["ipam"].update(metadataFile="/etc/vnet-cni/interfaces.xml", reuseCooldownSeconds=0)
    cm["data"]["10-vnet.conflist"] = json.dumps(conflist)
    cm["data"]["interfaces.xml"] = metadata_xml("000D3A51C490", "10.240.0.35", POOL)

    assert not node.cri.network_ready()
    seen: list[tuple[float, bool]] = []
    done = threading.Event()

    def watch():  # what kubelet's runtime status sync sees, every 50 ms
        while not done.is_set():
            seen.append((time.monotonic(), node.cri.network_ready()))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    t0 = time.monotonic()
    watcher.start()
    try:
        ds.start()
        pod_ready = time.monotonic() - t0
        node.wait_network_ready(True)
        done.set()
        watcher.join(5)
        start = {"pod_ready_s": pod_ready, "network_ready_s": next(t for t, ok in seen if ok) - t0,
                 "not_ready_first": not seen[0][1], "image": built, "second_tag": second_tag,
                 "import_s": imported_s}
        yield ds, start
    finally:
        done.set()
        ds.delete()
        node.kubelet.delete_all()
        node.clear_conflists()
        node.forget_vnet("vntds0")


def test_daemonset_turns_the_node_network_ready(node, agent, report):
    """install-cni then vnetd, as kubelet runs the template: NetworkReady is false until the agent
    serves, then true; the agent runs unprivileged with no /var/run/netns mount."""
    ds, start = agent
    built = start["image"]
    assert start["not_ready_first"]  # NetworkReady=false before the agent serves
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in ds.pod.timings.items())
    report(f"DaemonSet start -> NetworkReady {start['network_ready_s']:.2f} s ({steps}; the stand-in probes "
           f"every 0.1 s) (image {built.tag}, archive {built.archive_bytes / 1e6:.1f} MB, "
           f"ctr import {start['import_s']:.1f} s)")
    assert {"vnet", "vnet-ipam"} <= set(os.listdir(node.cni_bin))  # the init container's work
    assert not (node.cni_bin / ".vnet-cni").exists()  # no fallback on the host
    assert [p.name for p in node.cni_conf.iterdir()] == ["10-vnet.conflist"]  # written by the agent
    status = node.cri.container_status(ds.pod.containers["vnetd"])
    mounts = {m.container_path.rstrip("/") for m in status.mounts}
    assert not mounts & {"/var/run/netns", "/run/netns", "/var/run", "/run"}, mounts
    assert not any(c.get("securityContext", {}).get("privileged") for c in ds.template["spec"]["containers"])
    assert node.kubelet.probe(ds.pod, "vnetd", "livenessProbe")


def test_pods_get_pool_addresses_from_the_agent(node, agent, report):
    """Pods created after the agent started (it has no /var/run/netns: the front door passes the
    namespace) get pool addresses served by the agent itself, reach each other and the gateway,
    one pod too many gets the exhaustion error, and Stop + Remove leave nothing."""
    from support.cri import CRIError

    ds, _ = agent
    state = node.host / "var/run/vnet"
    pods = []
    try:
        for i in range(3):
            pods.append(node.busybox_pod(f"app-{i}"))
        def served_by_the_agent(sid):
            assert served_ok(node, ds.pod, sid)

        sandbox_ms = sandbox_latencies(node, "ds", served_by_the_agent)
        report(f"vnet via vnetd (DaemonSet container): RunPodSandbox {ms_summary(sandbox_ms)}")
        ips = [p.ip for p in pods]
        assert len(set(ips)) == 3 and set(ips) <= set(POOL), ips
        assert all(served_ok(node, ds.pod, p.sandbox_id) for p in pods)
        assert node.ping(pods[0], "10.240.0.1") and node.ping(pods[0], ips[1]) and node.ping(pods[2], ips[0])
        # max pods is the pool: two more fit, the next one gets the clear exhaustion error
        pods += [node.busybox_pod(f"app-{i}") for i in (3, 4)]
        with pytest.raises(CRIError) as err:
            node.busybox_pod("one-too-many")
        assert "no address available on this node: 5 of 5 in use" in err.value.details, err.value.details
        assert len(node.cri.sandboxes()) == 6  # five pods and the agent: nothing half made
    finally:
        for pod in pods:
            node.kubelet.delete_pod(pod)
    wait_for_teardowns(str(state))
    eps, allocs = node_state(state)
    assert eps == {} and allocs == {}, (eps, allocs)
    assert not [l for l in node.links() if l.startswith("azv")]
    assert node.sandbox_netns() == []


def test_agent_killed_and_restarted_with_pods_running(node, agent):
    """The agent container killed: pods keep connectivity; while it is down a new pod fails fast
    with the code-11 message naming vnetd and nothing is half made, and a pod deleted then is
    removed at once (its DEL is carried out when the agent is back: the address comes free);
    kubelet restarts the agent, state survives, the next ADD works."""
    from support.cri import CRIError

    ds, _ = agent
    state = node.host / "var/run/vnet"
    pods = [node.busybox_pod(f"keep-{i}") for i in range(2)]
    leaving = node.busybox_pod("leaving")
    try:
        ips = [p.ip for p in pods]
        os.kill(node.kubelet.pid(ds.pod, "vnetd"), 9)
        node.kubelet.wait_exit(ds.pod.containers["vnetd"], timeout=15)
        assert node.ping(pods[0], ips[1]) and node.ping(pods[1], "10.240.0.1")
        assert len(node_state(state)[0]) == 3
        start = time.monotonic()
        node.kubelet.delete_pod(leaving)  # Stop + Remove: two DELs nobody serves right now
        leaving_s = time.monotonic() - start
        leaving = None
        assert leaving_s < 15, leaving_s
        start = time.monotonic()
        with pytest.raises(CRIError) as err:
            node.busybox_pod("while-down", sandbox_timeout=30)
        down_s = time.monotonic() - start
        assert down_s < 10, down_s
        assert "vnetd" in err.value.details and "/var/run/vnet/vnetd.sock" in err.value.details, err.value.details
        # containerd shows the plugin's msg and details, not its code: ask the same front door
        answer = node.plugin("vnet", "ADD", json.loads(node.conflist_text())["plugins"][0], "vnt-probe-down")
        assert answer.code != 0 and answer.out["code"] == 11, answer
        assert len(node.cri.sandboxes()) == 3  # the two pods and the agent
        assert len(node_state(state)[1]) == 3  # the deleted pod's address is not released yet
        node.kubelet.restart_container(ds.pod, "vnetd")
        node.kubelet.wait_ready(ds.pod, 60)
        eps, allocs = node_state(state)
        assert len(eps) == 2, node.kubelet.logs(ds.pod, "vnetd")  # the running pods' records survive
        assert sorted(a["address"].split("/")[0] for a in allocs.values()) == sorted(ips), allocs  # the DEL was carried out
        pods.append(node.busybox_pod("after-restart"))
        assert pods[-1].ip in POOL and served_ok(node, ds.pod, pods[-1].sandbox_id)
        assert node.ping(pods[-1], ips[0])
    finally:
        if not node.kubelet.running(ds.pod, "vnetd"):  # the next scenario needs its agent
            node.kubelet.restart_container(ds.pod, "vnetd")
            node.kubelet.wait_ready(ds.pod, 60)
        for pod in pods + ([leaving] if leaving else []):
            node.kubelet.delete_pod(pod)
    wait_for_teardowns(str(state))  # vnetd answers DEL before the veth is gone; its reaper finishes
    assert node_state(state) == ({}, {})


def test_liveness_probe_catches_a_hung_agent(node, agent):
    """vnetd stopped (SIGSTOP: the process exists, the socket does not answer): an ADD fails within
    the front door's deadline with code 11 instead of hanging the pod start; the DaemonSet's
    liveness probe fails; kubelet's restart brings the agent back with the pods intact."""
    from support.cri import CRIError

    ds, _ = agent
    state = node.host / "var/run/vnet"
    pod = node.busybox_pod("steady")
    pid = node.kubelet.pid(ds.pod, "vnetd")
    try:
        os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        assert not node.kubelet.probe(ds.pod, "vnetd", "livenessProbe")
        probe_s = time.monotonic() - start
        start = time.monotonic()
        with pytest.raises(CRIError) as err:
            node.busybox_pod("while-hung", sandbox_timeout=60)
        hung_s = time.monotonic() - start
        assert hung_s < 20, hung_s
        assert "vnetd" in err.value.details, err.value.details
        assert node.ping(pod, "10.240.0.1")  # the dataplane does not need the agent
        # kubelet restarts a container whose liveness probe keeps failing (the stand-in kills at
        # once: a stopped process would sit out the whole grace period)
        node.kubelet.restart_container(ds.pod, "vnetd")
        node.kubelet.wait_ready(ds.pod, 60)
        assert [e["ips"][0].split("/")[0] for e in node_state(state)[0].values()] == [pod.ip]
        again = node.busybox_pod("after-hang")
        assert served_ok(node, ds.pod, again.sandbox_id) and node.ping(again, pod.ip)
        node.kubelet.delete_pod(again)
        assert probe_s < 10, probe_s
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        if not node.kubelet.running(ds.pod, "vnetd"):
            node.kubelet.restart_container(ds.pod, "vnetd")
            node.kubelet.wait_ready(ds.pod, 60)
        node.kubelet.delete_pod(pod)
    wait_for_teardowns(str(state))
    assert node_state(state) == ({}, {})


def test_upgrade_to_a_second_tag_keeps_every_address(node, agent, report):
    """RollingUpdate to a second image tag with pods running: the old agent goes (grace period),
    the new one comes; no pod loses its address or connectivity; new pods work."""
    ds, start = agent
    state = node.host / "var/run/vnet"
    pods = [node.busybox_pod(f"up-{i}") for i in range(3)]
    try:
        before = {p.sandbox_id: node.cri.sandbox_status(p.sandbox_id).status.network.ip for p in pods}
        _, gap = ds.rollout(start["second_tag"])
        report(f"rollout to {start['second_tag']}: {gap:.2f} s from old agent deletion to new agent ready")
        assert ds.images() == {start["second_tag"]}
        after = {p.sandbox_id: node.cri.sandbox_status(p.sandbox_id).status.network.ip for p in pods}
        assert after == before
        assert sorted(e["ips"][0].split("/")[0] for e in node_state(state)[0].values()) == sorted(before.values())
        assert node.ping(pods[0], pods[2].ip) and node.ping(pods[1], "10.240.0.1")
        pods.append(node.busybox_pod("after-upgrade"))
        assert served_ok(node, ds.pod, pods[-1].sandbox_id)
    finally:
        for pod in pods:
            node.kubelet.delete_pod(pod)
    wait_for_teardowns(str(state))
    assert node_state(state) == ({}, {})
