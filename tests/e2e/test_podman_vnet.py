"""podman (CNI backend) runs containers on a `vnet` network whose IPAM reads a live
`vnetctl metadata serve` on loopback, chained with the reference portmap."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_tool
from support.cni import metadata_xml, node_nic, ns_exec
from support.podman import Podman
from support.statefiles import load_state

VNETCTL = str(Path(sys.executable).with_name("vnetctl"))


@pytest.fixture
def metadata_service(tmp_path, node_ns):
    """The node's metadata service, on the node namespace's loopback (where the plugins run)."""
    from vnetcni.dataplane.netns import entered

    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 66)]))
    port = 18090
    proc = subprocess.Popen(["ip", "netns", "exec", node_ns, VNETCTL, "metadata", "serve", "--listen",
                             f"127.0.0.1:{port}", "--interfaces", str(md)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/machine/plugins?comp=nmagent&type=getinterfaceinfov1"
    try:
        deadline = time.monotonic() + 20
        while True:
            with entered(f"/run/netns/{node_ns}"):
                probe = socket.socket()
            try:
                probe.settimeout(1)
                probe.connect(("127.0.0.1", port))
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "metadata service did not start"
                time.sleep(0.05)
            finally:
                probe.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


@pytest.fixture
def podman(tmp_path, node_ns, cni_bin):
    for tool in ("podman", "runc", "nsenter", "busybox"):
        require_tool(tool)
    pm = Podman(tmp_path / "podman", node_ns, [cni_bin, "/usr/lib/cni"])
    try:
        yield pm
    finally:
        pm.cleanup()


def _web_and_client(podman, metadata_url: str, vnet: dict) -> dict[str, str]:
    """A `vntnet` network (vnet with `vnet`'s keys, vnet-ipam, the reference portmap), a web
    container publishing 18080 -> 8080 and a client; their addresses."""
    conflist = {"cniVersion": "1.0.0", "name": "vntnet", "plugins": [
        {"type": "vnet", **vnet,
         "ipam": {"type": "vnet-ipam", "metadataUrl": metadata_url, "reuseCooldownSeconds": 0}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    (podman.net_dir / "vntnet.conflist").write_text(json.dumps(conflist))
    image = podman.import_busybox()
    podman("run", "-d", "--name", "vnt-web", "--network", "vntnet", "-p", "18080:8080", image,
           "sh", "-c", "echo hello-from-web > /tmp/index.html; exec httpd -f -p 8080 -h /tmp")
    podman("run", "-d", "--name", "vnt-client", "--network", "vntnet", image, "sleep", "600")
    return {name: podman("inspect", name, "--format", "{{.NetworkSettings.Networks.vntnet.IPAddress}}").stdout.strip()
            for name in ("vnt-web", "vnt-client")}


def test_podman_containers_on_a_vnet_network(podman, node_ns, metadata_service, tmp_path):
    state = tmp_path / "vnet-state"
    ips = _web_and_client(podman, metadata_service, {"bridge": "vntbr0", "stateDir": str(state)})
    pool = {f"10.240.0.{i}" for i in range(36, 66)}
    assert set(ips.values()) <= pool and len(set(ips.values())) == 2, ips

    # container to container, across the bridge
    got = podman("exec", "vnt-client", "timeout", "5", "wget", "-q", "-O", "-",
                 f"http://{ips['vnt-web']}:8080/index.html").stdout
    assert got.strip() == "hello-from-web"
    # the host (the node) to the container through the reference portmap's DNAT
    fetch = ("import urllib.request;print(urllib.request.urlopen("
             "'http://10.240.0.1:18080/index.html',timeout=5).read().decode())")
    got = ns_exec(node_ns, sys.executable, "-c", fetch, timeout=20)
    assert got.stdout.strip() == "hello-from-web", got.stderr

    endpoints = json.loads(subprocess.run([VNETCTL, "endpoints", "--state-dir", str(state), "--json"],
                                          capture_output=True, text=True, check=True).stdout)
    assert sorted(e["ips"][0].split("/")[0] for e in endpoints) == sorted(ips.values())
    assert all(e["host_if_name"].startswith("azv") for e in endpoints)

    podman("rm", "-f", "-t", "0", "vnt-web", "vnt-client")
    assert load_state(state / "endpoints.json")["endpoints"] == {}
    ipam = load_state(state / "ipam.json")
    assert ipam["allocations"] == {}, ipam["allocations"]
    assert not [l for l in os.listdir("/sys/class/net") if l.startswith("azv")]  # nothing leaked to the host


def test_podman_containers_on_a_transparent_vnet_network(podman, node_ns, metadata_service, tmp_path):
    """Transparent (routed) mode through podman, the reference portmap chained after it: the node
    routes between the containers and DNATs its hostPort to one of them."""
    node_nic(node_ns, "10.240.0.35/16")  # the node's NIC and primary address; a k8s node forwards
    state = tmp_path / "vnet-state"
    ips = _web_and_client(podman, metadata_service, {"mode": "transparent", "stateDir": str(state)})
    assert set(ips.values()) <= {f"10.240.0.{i}" for i in range(36, 66)} and len(set(ips.values())) == 2, ips
    route = podman("exec", "vnt-client", "ip", "route").stdout
    assert "default via 169.254.1.1 dev eth0" in route, route
    assert "/32" in podman("exec", "vnt-client", "ip", "-4", "addr", "show", "eth0").stdout

    # container to container: routed by the node (no bridge exists)
    got = podman("exec", "vnt-client", "timeout", "5", "wget", "-q", "-O", "-",
                 f"http://{ips['vnt-web']}:8080/index.html").stdout
    assert got.strip() == "hello-from-web"
    assert "bridge" not in ns_exec(node_ns, "ip", "-d", "link", "show").stdout
    # the node to the container through the reference portmap's DNAT on its own address
    fetch = ("import urllib.request;print(urllib.request.urlopen("
             "'http://10.240.0.35:18080/index.html',timeout=5).read().decode())")
    got = ns_exec(node_ns, sys.executable, "-c", fetch, timeout=20)
    assert got.stdout.strip() == "hello-from-web", got.stderr

    endpoints = json.loads(subprocess.run([VNETCTL, "endpoints", "--state-dir", str(state), "--json"],
                                          capture_output=True, text=True, check=True).stdout)
    assert sorted(e["ips"][0] for e in endpoints) == sorted(f"{ip}/32" for ip in ips.values())
    assert all(e["mode"] == "transparent" for e in endpoints)

    podman("rm", "-f", "-t", "0", "vnt-web", "vnt-client")
    assert load_state(state / "endpoints.json")["endpoints"] == {}
    assert load_state(state / "ipam.json")["allocations"] == {}
    assert "azv" not in ns_exec(node_ns, "ip", "route").stdout
