"""The image from scripts/build-image.sh: its size, its statically linked front doors, install-cni,
and vnetd inside it as the DaemonSet runs it (only NET_ADMIN + SYS_ADMIN, read-only root, state and
CNI conf dir on host directories): it answers the probe, installs the conflist once serving, and
leaves it in place on SIGTERM."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
from pathlib import Path


from support.cni import metadata_xml
from support.resources import OWNER
from support.statefiles import load_state

ARCHIVE_LIMIT = 80 * 1024 * 1024


def is_static_elf(path: Path) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP): runs on any host."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, f"{path} is not a 64-bit ELF"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def test_archive_is_an_oci_archive_within_budget(vnet_image):
    import tarfile

    assert vnet_image.archive_bytes <= ARCHIVE_LIMIT, f"{vnet_image.archive_bytes / 1e6:.1f} MB"
    with tarfile.open(vnet_image.archive) as tar:
        names = set(tar.getnames())
        assert {"oci-layout", "index.json"} <= names
        index = json.load(tar.extractfile("index.json"))
    ref = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    assert vnet_image.tag.endswith(ref)


def test_install_cni_puts_static_front_doors_on_the_host(vnet_image, tmp_path):
    host_bin = tmp_path / "opt-cni-bin"
    host_bin.mkdir()
    (host_bin / "portmap").write_text("not ours")
    run = ["run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
           "-v", f"{host_bin}:/host/opt/cni/bin", vnet_image.tag,
           "vnetctl", "install-cni", "--cni-bin-dir", "/host/opt/cni/bin"]
    first = vnet_image.podman(*run).stdout
    assert "installed /host/opt/cni/bin/vnet" in first and "installed /host/opt/cni/bin/vnet-ipam" in first
    assert sorted(os.listdir(host_bin)) == ["portmap", "vnet", "vnet-ipam"]
    for name in ("vnet", "vnet-ipam"):
        assert is_static_elf(host_bin / name)
        assert os.access(host_bin / name, os.X_OK)
    second = vnet_image.podman(*run).stdout
    assert second.count("unchanged") == 2
    # the front door runs on the host (static: no loader, no Python); with no vnetd it answers a
    # CNI error object on stdout (code 11: try again later, naming vnetd) instead of crashing
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x", "CNI_NETNS": "/nonexistent", "CNI_IFNAME": "eth0",
           "CNI_PATH": str(host_bin)}
    conf = {"cniVersion": "1.0.0", "name": "vnet", "type": "vnet", "stateDir": str(tmp_path / "nostate")}
    proc = subprocess.run([str(host_bin / "vnet")], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode != 0
    err = json.loads(proc.stdout)
    assert err["code"] == 11 and "vnetd" in err["msg"]  # no fallback on the host: retry later


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_vnetd_in_the_image_serves_then_installs_the_conflist(vnet_image, tmp_path):
    state, net_d, cfg = tmp_path / "var-run-vnet", tmp_path / "etc-cni-net.d", tmp_path / "config"
    for d in (state, net_d, cfg):
        d.mkdir()
    (cfg / "nic.xml").write_text(metadata_xml("00:0d:3a:00:00:01", "10.240.0.4",
                                              [f"10.240.0.{i}" for i in range(5, 9)]))
    conflist = {"cniVersion": "1.0.0", "name": "vnet", "plugins": [
        {"type": "vnet", "bridge": "azure0", "stateDir": "/var/run/vnet",
         "ipam": {"type": "vnet-ipam", "stateDir": "/var/run/vnet", "metadataFile": "/etc/vnet-cni/nic.xml"}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    (cfg / "10-vnet.conflist").write_text(json.dumps(conflist))
    name = f"{OWNER}vnetd"
    vnet_image.podman("run", "-d", "--name", name, "--network", "none", "--read-only",
                      "--cap-drop", "ALL", "--cap-add", "NET_ADMIN,SYS_ADMIN",
                      "-v", f"{state}:/var/run/vnet", "-v", f"{net_d}:/host/etc/cni/net.d",
                      "-v", f"{cfg}:/etc/vnet-cni:ro", vnet_image.tag,
                      "vnetd", "--state-dir=/var/run/vnet", "--conflist=/etc/vnet-cni/10-vnet.conflist",
                      "--cni-conf-dir=/host/etc/cni/net.d")
    try:
        probe = ["exec", name, "vnetctl", "probe", "--state-dir=/var/run/vnet", "--timeout=3"]
        _wait(lambda: vnet_image.podman(*probe, check=False).returncode == 0, 60, "vnetd to answer the probe")
        _wait(lambda: (net_d / "10-vnet.conflist").exists(), 60, "the conflist")
        assert json.loads((net_d / "10-vnet.conflist").read_text()) == conflist
        ready = vnet_image.podman(*probe, "--conflist=/host/etc/cni/net.d/10-vnet.conflist")
        assert "vnetd answers" in ready.stdout
        assert load_state(state / "ipam.json")  # the pool was learned before the conflist
        assert sorted(os.listdir(net_d)) == ["10-vnet.conflist"]  # no temp file
        vnet_image.podman("stop", "-t", "20", name)  # SIGTERM
        assert (net_d / "10-vnet.conflist").exists()  # a restart or upgrade keeps the node Ready
        assert not (state / "vnetd.sock").exists()
        logs = vnet_image.podman("logs", name).stderr
        assert "stopped" in logs and "Traceback" not in logs
    finally:
        vnet_image.podman("rm", "-f", "-t", "0", name, check=False)


def test_uninstall_daemonset_command_cleans_a_node(vnet_image, tmp_path):
    """The init container of deploy/uninstall/ run in the image, its host volumes mapped onto
    throwaway directories that stand in for the host's."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    (doc,) = yaml.safe_load_all((root / "deploy" / "uninstall" / "daemonset.yaml").read_text())
    spec = doc["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    host = tmp_path / "host"
    volumes = {v["name"]: host / v["hostPath"]["path"].lstrip("/") for v in spec["volumes"]}
    for d in (*volumes.values(), host / "opt/cni/bin", host / "run/vnet"):
        d.mkdir(parents=True, exist_ok=True)
    # a node with vnet-cni on it: front doors (from the image), a conflist, state, another CNI's files
    vnet_image.podman("run", "--rm", "--network", "none", "-v", f"{host / 'opt/cni/bin'}:/b", vnet_image.tag,
                      "vnetctl", "install-cni", "--cni-bin-dir", "/b")
    (host / "opt/cni/bin/portmap").write_text("reference plugin")
    net_d = host / "etc/cni/net.d"
    (net_d / "10-vnet.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "vnet", "plugins": [
        {"type": "vnet", "ipam": {"type": "vnet-ipam"}}]}))
    (net_d / "20-other.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "o", "plugins": [
        {"type": "bridge"}]}))
    (host / "run/vnet/ipam.json").write_text("{}")
    (host / "run/vnet/endpoints.json").write_text('{"endpoints": {}}')
    (host / "run/other-daemon.pid").write_text("1")
    args = ["run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL"]
    for m in init["volumeMounts"]:
        args += ["-v", f"{volumes[m['name']]}:{m['mountPath']}"]
    out = vnet_image.podman(*args, vnet_image.tag, *init["command"])
    assert "Traceback" not in out.stdout + out.stderr
    assert sorted(os.listdir(host / "opt/cni/bin")) == ["portmap"]
    assert os.listdir(net_d) == ["20-other.conflist"]
    assert not (host / "run/vnet").exists() and (host / "run/other-daemon.pid").exists()
    assert not (host / "opt/vnet-cni").exists()
