"""deploy/: every manifest passes kubernetes-validate --strict offline, and the DaemonSet says what
the node needs (and nothing more): the properties an operator relies on are checked one by one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import vnetcni
from vnetcni.deploy.conflist import load

import kubernetes_validate  # noqa: E402  (test extra)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


def documents():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def by_kind(kind: str) -> dict:
    found = [doc for _, doc in documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/"
    return found[0]


def test_manifests_exist():
    assert {p.name for p in MANIFESTS} >= {"configmap.yaml", "daemonset.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_strict_validation_cli(path):
    """The command an operator (and CI) runs, offline."""
    exe = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run([str(exe), "--strict", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout + proc.stderr


def test_strict_validation_rejects_a_misspelt_field():
    """--strict really is strict here: a typo in the pod spec fails (without it, it passes)."""
    ds = by_kind("DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, kubernetes_validate.latest_version(), strict=True)


def test_everything_in_kube_system():
    for path, doc in documents():
        assert doc["metadata"]["namespace"] == "kube-system", path


def pod_spec() -> dict:
    return by_kind("DaemonSet")["spec"]["template"]["spec"]


def test_daemonset_shape():
    ds = by_kind("DaemonSet")
    spec = pod_spec()
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec  # no RBAC: nothing calls the API
    assert {"operator": "Exists"} in spec["tolerations"]  # every taint
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    assert [c["name"] for c in spec["initContainers"]] == ["install-cni"]
    assert [c["name"] for c in spec["containers"]] == ["vnetd"]
    for c in spec["initContainers"] + spec["containers"]:
        assert c["image"] == f"localhost/vnet-cni:{vnetcni.__version__}"
        assert not c.get("securityContext", {}).get("privileged")
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_install_cni_copies_the_front_doors_and_nothing_else():
    (init,) = pod_spec()["initContainers"]
    assert init["command"][:2] == ["vnetctl", "install-cni"]
    assert "add" not in init["securityContext"]["capabilities"]
    assert [m["mountPath"] for m in init["volumeMounts"]] == ["/host/opt/cni/bin"]
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    assert volumes[init["volumeMounts"][0]["name"]]["hostPath"]["path"] == "/opt/cni/bin"


def _arg(container: dict, flag: str) -> str:
    for a in container["args"]:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {container['args']}")


def test_vnetd_container():
    (vnetd,) = pod_spec()["containers"]
    caps = vnetd["securityContext"]["capabilities"]["add"]
    assert set(caps) == {"NET_ADMIN", "SYS_ADMIN"}
    mounts = {m["mountPath"]: m["name"] for m in vnetd["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    state_dir = _arg(vnetd, "--state-dir")
    assert volumes[mounts[state_dir]]["hostPath"]["path"] == "/var/run/vnet" == state_dir
    assert not any(p.startswith(("/var/run/netns", "/run/netns", "/proc")) for p in mounts)
    conf_dir = _arg(vnetd, "--cni-conf-dir")
    assert volumes[mounts[conf_dir]]["hostPath"]["path"] == "/etc/cni/net.d"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        cmd = vnetd[probe]["exec"]["command"]
        assert cmd[:2] == ["vnetctl", "probe"] and f"--state-dir={state_dir}" in cmd
        assert vnetd[probe]["timeoutSeconds"] >= 2
    assert f"--conflist={conf_dir}/10-vnet.conflist" in vnetd["readinessProbe"]["exec"]["command"]


def test_vnetd_flags_exist():
    """Every flag the DaemonSet passes is one vnetd (and vnetctl) accepts."""
    (vnetd,) = pod_spec()["containers"]
    help_text = subprocess.run([str(Path(sys.executable).with_name("vnetd")), "--help"],
                               capture_output=True, text=True, timeout=60).stdout
    for a in vnetd["args"]:
        assert a.split("=", 1)[0] in help_text, a
    probe_help = subprocess.run([str(Path(sys.executable).with_name("vnetctl")), "probe", "--help"],
                                capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    for flag in ("--state-dir", "--timeout", "--conflist"):
        assert flag in probe_help


def test_configmap_feeds_vnetd(tmp_path):
    cm = by_kind("ConfigMap")
    (vnetd,) = pod_spec()["containers"]
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in vnetd["env"]}
    for ref in env.values():
        assert ref["name"] == cm["metadata"]["name"] and ref["key"] in cm["data"]
    port = int(cm["data"]["metrics-port"])
    assert vnetd["ports"][0]["containerPort"] == port
    assert by_kind("DaemonSet")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    mounts = {m["name"]: m["mountPath"] for m in vnetd["volumeMounts"]}
    conflist_arg = _arg(vnetd, "--conflist")
    assert conflist_arg == f"{mounts['config']}/10-vnet.conflist"
    # the conflist in the ConfigMap is one vnetd accepts for its state directory
    src = tmp_path / "10-vnet.conflist"
    src.write_text(cm["data"]["10-vnet.conflist"])
    data, configs = load(str(src), _arg(vnetd, "--state-dir"))
    assert json.loads(data)["plugins"][0]["type"] == "vnet" and len(configs) == 1


UNINSTALL = sorted((DEPLOY / "uninstall").glob("*.yaml"))


@pytest.mark.parametrize("path", UNINSTALL, ids=lambda p: p.name)
def test_uninstall_manifest_strict(path):
    """deploy/uninstall/ (not applied by `kubectl apply -f deploy/`: no -R) validates too."""
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_uninstall_daemonset_runs_vnetctl_uninstall_on_the_host_paths():
    (doc,) = [d for d in yaml.safe_load_all((DEPLOY / "uninstall" / "daemonset.yaml").read_text())]
    spec = doc["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    cmd = init["command"]
    assert cmd[:3] == ["vnetctl", "uninstall", "--remove-state"]
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}

    def on_host(path: str) -> str:  # the host path a container path lands on
        for mount, name in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if path == mount or path.startswith(mount + "/"):
                return host[name] + path[len(mount):]
        raise AssertionError(f"{path} is not on a host volume")

    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert on_host(flags["--cni-bin-dir"]) == "/opt/cni/bin"
    assert on_host(flags["--cni-conf-dir"]) == "/etc/cni/net.d"
    assert on_host(flags["--state-dir"]) == "/run/vnet"  # /var/run/vnet: /var/run is /run
    assert on_host(flags["--prefix"]) == "/opt/vnet-cni"
    help_text = subprocess.run([str(Path(sys.executable).with_name("vnetctl")), "uninstall", "--help"],
                               capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    for flag in flags:
        assert flag in help_text, flag
    for c in spec["initContainers"] + spec["containers"]:
        assert c["image"] == f"localhost/vnet-cni:{vnetcni.__version__}"
        assert not c["securityContext"].get("privileged") and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert spec["automountServiceAccountToken"] is False and {"operator": "Exists"} in spec["tolerations"]
