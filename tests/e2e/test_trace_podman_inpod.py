"""`vnetctl capture --in-pod` on a real container that has no tools at all (its image is one
static binary) and runs as a non-root user: tcpdump runs from the host, set into the pod's netns.

podman runs with a private configuration and storage, inside a throwaway node namespace (via
nsenter, which keeps the cgroup mounts that `ip netns exec` would hide), so its CNI bridge and
veths never touch the root namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import require_tool

VNETCTL = os.path.join(os.path.dirname(sys.executable), "vnetctl")
PAUSE_C = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n"


class Podman:
    def __init__(self, tmp_path, node_ns: str) -> None:
        self.dir = tmp_path
        self.node = node_ns
        (tmp_path / "net").mkdir()
        (tmp_path / "containers.conf").write_text(
            '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            '[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["/usr/lib/cni"]\n')
        (tmp_path / "net" / "vntpm.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "vntpm", "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True,
                "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                         "ranges": [[{"subnet": "10.97.0.0/24", "gateway": "10.97.0.1"}]]}}]}))
        self.env = dict(os.environ, CONTAINERS_CONF=str(tmp_path / "containers.conf"))
        self.runroot = tempfile.mkdtemp(prefix="vntpm", dir="/tmp")  # podman wants <= 50 characters

    def run(self, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
        cmd = ["nsenter", f"--net=/run/netns/{self.node}", "podman", "--root", str(self.dir / "root"),
               "--runroot", self.runroot, "--network-config-dir", str(self.dir / "net"), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, env=self.env, timeout=120)
        if check:
            assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout.decode().strip()


@pytest.fixture
def podman(node_ns, tmp_path):
    for tool in ("podman", "runc", "gcc", "tcpdump", "nsenter", "/usr/lib/cni/bridge"):
        require_tool(tool)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (tmp_path / "pause.c").write_text(PAUSE_C)
    subprocess.run(["gcc", "-static", "-Os", "-o", str(rootfs / "pause"), str(tmp_path / "pause.c")],
                   check=True, capture_output=True, timeout=120)
    p = Podman(tmp_path, node_ns)
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], check=True, capture_output=True).stdout
    p.run("import", "-", "localhost/vntpause", stdin=tar)
    containers: list[str] = []
    p.containers = containers
    try:
        yield p
    finally:
        for c in containers:
            p.run("rm", "-f", "-t", "0", c, check=False)  # CNI DEL runs in the node namespace
        p.run("rmi", "-a", "-f", check=False)
        shutil.rmtree(p.runroot, ignore_errors=True)


def test_in_pod_capture_of_a_toolless_non_root_container(podman, node_ns, tmp_path):
    cid = podman.run("run", "-d", "--user", "65534:65534", "--network", "vntpm",
                     "localhost/vntpause", "/pause")
    podman.containers.append(cid)
    netns, address, user = podman.run(
        "inspect", "--format",
        "{{.NetworkSettings.SandboxKey}} {{.NetworkSettings.Networks.vntpm.IPAddress}} {{.Config.User}}",
        cid).split()
    assert user == "65534:65534"
    no_shell = podman.run("exec", cid, "/bin/sh", "-c", "true", check=False)
    assert no_shell == ""  # nothing to run in there: the image is one static binary
    fabric = tmp_path / "fabric.json"
    fabric.write_text(json.dumps({"name": "vntpm", "nodes": [
        {"name": "pm", "netns": node_ns, "stateDir": str(tmp_path / "no-state")}]}))
    proc = subprocess.Popen([VNETCTL, "capture", netns, "--fabric", str(fabric), "--node", "pm",
                             "--in-pod", "-f", "icmp", "-c", "2", "-d", "60", "-o", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        said = [b""]
        while b"listening on" not in said[-1]:
            said.append(proc.stderr.readline())
            assert said[-1], "vnetctl capture ended before listening"
        assert b"eth0 inside pod" in said[-1]
        subprocess.run(["ip", "netns", "exec", node_ns, "ping", "-c", "1", "-W", "2", address],
                       capture_output=True, timeout=30)
        out, err = proc.communicate(timeout=60)
        err = b"".join(said) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    shown = subprocess.run(["tcpdump", "-nn", "-r", "-"], input=out, capture_output=True, timeout=30)
    lines = shown.stdout.decode().splitlines()
    assert len(lines) == 2
    assert "10.97.0.1 > " + address + ": ICMP echo request" in lines[0]
    assert address + " > 10.97.0.1: ICMP echo reply" in lines[1]
    assert b"wrote 2 packets to stdout" in err and b"found by veth peer link" in err
