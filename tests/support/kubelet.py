"""A kubelet stand-in: runs pods from Kubernetes pod specs through the CRI, the way kubelet does.

Pod sandbox first (RunPodSandbox: this is where the runtime calls the CNI plugins), then the init
containers one after the other, each to a zero exit, then the containers; hostPath volumes are
mapped onto a throwaway directory that stands in for the host's root (`host_root`), configMap and
emptyDir volumes are materialised in the pod's own directory; env (value, fieldRef,
configMapKeyRef, envFrom), securityContext (capabilities, privileged, readOnlyRootFilesystem,
runAsUser, allowPrivilegeEscalation), resources and exec probes (ExecSync) are honoured. What a
spec asks for and the stand-in cannot do raises NotSupported: a test never silently runs less
than the manifest says.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from support.cri import CRIClient, CRIError
from support.cri import runtime_pb2 as api


class NotSupported(RuntimeError):
    pass


class PodFailed(RuntimeError):
    pass


@dataclass
class Pod:
    name: str
    namespace: str
    uid: str
    spec: dict
    config: api.PodSandboxConfig
    sandbox_id: str
    dir: Path
    ip: str = ""
    containers: dict[str, str] = field(default_factory=dict)  # name -> container id
    timings: dict[str, float] = field(default_factory=dict)  # seconds from the start of run_pod
    attempts: dict[str, int] = field(default_factory=dict)


PROPAGATION = {None: api.PROPAGATION_PRIVATE, "None": api.PROPAGATION_PRIVATE,
               "HostToContainer": api.PROPAGATION_HOST_TO_CONTAINER,
               "Bidirectional": api.PROPAGATION_BIDIRECTIONAL}
_UNITS = {"Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "": 1}


def memory_bytes(q: str | int) -> int:
    m = re.fullmatch(r"(\d+)([KMG]i?|)", str(q))
    if not m:
        raise NotSupported(f"memory quantity {q!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) references in command, args and env values; $$ escapes a $."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def milli_cpu(q: str | int | float) -> int:
    s = str(q)
    return int(s[:-1]) if s.endswith("m") else int(float(s) * 1000)


class Kubelet:
    def __init__(self, cri: CRIClient, node_name: str, node_ip: str, workdir: Path, host_root: Path,
                 config_maps: dict[str, dict] | None = None) -> None:
        self.cri, self.node_name, self.node_ip = cri, node_name, node_ip
        self.workdir, self.host_root = workdir, host_root
        self.config_maps = config_maps or {}  # "namespace/name" -> ConfigMap manifest
        self.pods: dict[str, Pod] = {}
        self._serial = itertools.count(1)

    # --- pods --------------------------------------------------------------------------
    def sandbox_config(self, name: str, namespace: str, uid: str, spec: dict, labels: dict | None = None) -> api.PodSandboxConfig:
        host_net = bool(spec.get("hostNetwork"))
        for key in ("hostPID", "hostIPC"):
            if spec.get(key):
                raise NotSupported(f"spec.{key}")
        ns_opts = api.NamespaceOption(network=api.NODE if host_net else api.POD, pid=api.CONTAINER, ipc=api.POD)
        return api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            hostname="" if host_net else name,
            log_directory=str(self.workdir / "logs" / f"{namespace}_{name}_{uid}"),
            dns_config=api.DNSConfig(),
            labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                    "io.kubernetes.pod.uid": uid, **(labels or {})},
            linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(
                namespace_options=ns_opts,
                privileged=any(c.get("securityContext", {}).get("privileged")
                               for c in spec.get("containers", []) + spec.get("initContainers", [])))))

    def run_pod(self, name: str, spec: dict, namespace: str = "default", labels: dict | None = None,
                ready_timeout: float = 60, sandbox_timeout: float | None = None) -> Pod:
        """Sandbox, init containers (each to completion), containers; then waits for readiness."""
        t0 = time.monotonic()
        uid = str(uuid.uuid4())
        config = self.sandbox_config(name, namespace, uid, spec, labels)
        Path(config.log_directory).mkdir(parents=True, exist_ok=True)
        sandbox_id = self.cri.run_sandbox(config, timeout=sandbox_timeout)
        pod = Pod(name, namespace, uid, spec, config, sandbox_id, self.workdir / "pods" / uid)
        pod.timings["sandbox"] = time.monotonic() - t0
        self.pods[sandbox_id] = pod
        status = self.cri.sandbox_status(sandbox_id).status
        pod.ip = self.node_ip if spec.get("hostNetwork") else status.network.ip
        try:
            volumes = self._volumes(pod)
            for c in spec.get("initContainers", []):
                cid = self._start(pod, c, volumes)
                code = self.wait_exit(cid, timeout=c.get("_timeout", 60))
                if code != 0:
                    raise PodFailed(f"init container {c['name']} exited {code}: {self.logs(pod, c['name'])}")
                pod.timings[f"init {c['name']}"] = time.monotonic() - t0
            for c in spec.get("containers", []):
                self._start(pod, c, volumes)
            pod.timings["started"] = time.monotonic() - t0
            self.wait_ready(pod, ready_timeout)
            pod.timings["ready"] = time.monotonic() - t0
        except Exception:
            self.delete_pod(pod)
            raise
        return pod

    def delete_pod(self, pod: Pod, grace: int | None = None) -> None:
        """Containers stopped (with the pod's grace period), then StopPodSandbox and RemovePodSandbox:
        containerd tears the network down on both (CNI DEL twice)."""
        if grace is None:
            grace = int(pod.spec.get("terminationGracePeriodSeconds", 0) or 0)
        for cid in pod.containers.values():
            try:
                self.cri.stop_container(cid, timeout=grace)
            except CRIError:
                pass
        self.cri.stop_sandbox(pod.sandbox_id)
        self.cri.remove_sandbox(pod.sandbox_id)
        self.pods.pop(pod.sandbox_id, None)
        shutil.rmtree(pod.dir, ignore_errors=True)

    # --- containers --------------------------------------------------------------------
    def _volumes(self, pod: Pod) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for vol in pod.spec.get("volumes", []):
            name = vol["name"]
            if "hostPath" in vol:
                hp = vol["hostPath"]
                path = self.host_path(hp["path"])
                kind = hp.get("type", "")
                if kind in ("DirectoryOrCreate",):
                    path.mkdir(parents=True, exist_ok=True)
                elif kind == "Directory" and not path.is_dir():
                    raise PodFailed(f"hostPath {hp['path']} ({path}) is not a directory")
                elif kind in ("File", "Socket") and not path.exists():
                    raise PodFailed(f"hostPath {hp['path']} ({path}) does not exist")
                elif kind == "FileOrCreate" and not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                elif kind not in ("", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket"):
                    raise NotSupported(f"hostPath type {kind}")
                out[name] = path
            elif "configMap" in vol:
                cm = self.config_map(pod.namespace, vol["configMap"]["name"])
                d = pod.dir / "volumes" / name
                d.mkdir(parents=True, exist_ok=True)
                items = vol["configMap"].get("items") or [{"key": k, "path": k} for k in cm.get("data", {})]
                for item in items:
                    (d / item["path"]).write_text(cm["data"][item["key"]])
                out[name] = d
            elif "emptyDir" in vol:
                d = pod.dir / "volumes" / name
                d.mkdir(parents=True, exist_ok=True)
                out[name] = d
            else:
                raise NotSupported(f"volume {name}: {sorted(vol)}")
        return out

    def host_path(self, path: str) -> Path:
        return self.host_root / path.lstrip("/")

    def config_map(self, namespace: str, name: str) -> dict:
        try:
            return self.config_maps[f"{namespace}/{name}"]
        except KeyError:
            raise PodFailed(f"configmap {namespace}/{name} not found") from None

    def _env(self, pod: Pod, c: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.get("envFrom", []):
            if "configMapRef" not in src:
                raise NotSupported(f"envFrom {sorted(src)}")
            cm = self.config_map(pod.namespace, src["configMapRef"]["name"])
            env.update({src.get("prefix", "") + k: v for k, v in cm.get("data", {}).items()})
        fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "metadata.uid": pod.uid,
                  "spec.nodeName": self.node_name, "status.hostIP": self.node_ip, "status.podIP": pod.ip,
                  "status.podIPs": pod.ip, "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default")}
        for e in c.get("env", []):
            if "value" in e or "valueFrom" not in e:
                env[e["name"]] = expand(str(e.get("value", "")), env)
                continue
            src = e["valueFrom"]
            if "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                if path not in fields:
                    raise NotSupported(f"fieldRef {path}")
                env[e["name"]] = fields[path]
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                data = self.config_map(pod.namespace, ref["name"]).get("data", {})
                if ref["key"] not in data and not ref.get("optional"):
                    raise PodFailed(f"configmap {ref['name']} has no key {ref['key']}")
                if ref["key"] in data:
                    env[e["name"]] = data[ref["key"]]
            elif "resourceFieldRef" in src:
                ref = src["resourceFieldRef"]
                limits = c.get("resources", {}).get("limits", {})
                res = ref["resource"].split(".", 1)[1]
                if res == "memory":
                    env[e["name"]] = str(memory_bytes(limits.get("memory", 0)) // memory_bytes(ref.get("divisor", 1)))
                elif res == "cpu":
                    env[e["name"]] = str(max(1, -(-milli_cpu(limits.get("cpu", 1)) // milli_cpu(ref.get("divisor", 1)))))
                else:
                    raise NotSupported(f"resourceFieldRef {ref['resource']}")
            else:
                raise NotSupported(f"env valueFrom {sorted(src)}")
        return env

    def _linux(self, pod: Pod, c: dict) -> api.LinuxContainerConfig:
        sc = c.get("securityContext", {})
        caps = sc.get("capabilities", {})
        user = sc.get("runAsUser", pod.spec.get("securityContext", {}).get("runAsUser"))
        limits = c.get("resources", {}).get("limits", {})
        requests = c.get("resources", {}).get("requests", {})
        res = api.LinuxContainerResources(cpu_period=100000, oom_score_adj=-997 if pod.spec.get(
            "priorityClassName") in ("system-node-critical", "system-cluster-critical") else 0)
        if "memory" in limits:
            res.memory_limit_in_bytes = memory_bytes(limits["memory"])
        if "cpu" in limits:
            res.cpu_quota = milli_cpu(limits["cpu"]) * 100
        res.cpu_shares = max(2, milli_cpu(requests.get("cpu", limits.get("cpu", "2m"))) * 1024 // 1000)
        host_net = bool(pod.spec.get("hostNetwork"))
        return api.LinuxContainerConfig(resources=res, security_context=api.LinuxContainerSecurityContext(
            capabilities=api.Capability(add_capabilities=caps.get("add", []), drop_capabilities=caps.get("drop", [])),
            privileged=bool(sc.get("privileged")),
            namespace_options=api.NamespaceOption(network=api.NODE if host_net else api.POD, pid=api.CONTAINER,
                                                  ipc=api.POD),
            run_as_user=api.Int64Value(value=user) if user is not None else None,
            readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
            no_new_privs=sc.get("allowPrivilegeEscalation") is False))

    def _start(self, pod: Pod, c: dict, volumes: dict[str, Path]) -> str:
        name = c["name"]
        if not self.cri.image_present(c["image"]):
            raise PodFailed(f"image {c['image']} is not on the node (imagePullPolicy: the stand-in never pulls)")
        for key in ("lifecycle", "stdin", "tty", "workingDir"):
            if c.get(key):
                raise NotSupported(f"container {name}: {key}")
        mounts = []
        for vm in c.get("volumeMounts", []):
            if vm.get("subPath") or vm.get("subPathExpr"):
                raise NotSupported("volumeMounts subPath")
            if vm["name"] not in volumes:
                raise PodFailed(f"container {name} mounts unknown volume {vm['name']}")
            mounts.append(api.Mount(container_path=vm["mountPath"], host_path=str(volumes[vm["name"]]),
                                    readonly=bool(vm.get("readOnly")),
                                    propagation=PROPAGATION[vm.get("mountPropagation")]))
        attempt = pod.attempts.get(name, -1) + 1
        pod.attempts[name] = attempt
        env = self._env(pod, c)
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name, attempt=attempt), image=api.ImageSpec(image=c["image"]),
            command=[expand(a, env) for a in c.get("command", [])], args=[expand(a, env) for a in c.get("args", [])],
            envs=[api.KeyValue(key=k, value=v) for k, v in env.items()], mounts=mounts,
            labels={"io.kubernetes.container.name": name, **dict(pod.config.labels)},
            log_path=f"{name}/{attempt}.log", linux=self._linux(pod, c))
        cid = self.cri.create_container(pod.sandbox_id, config, pod.config)
        self.cri.start_container(cid)
        pod.containers[name] = cid
        return cid

    def container_spec(self, pod: Pod, name: str) -> dict:
        return next(c for c in pod.spec.get("containers", []) + pod.spec.get("initContainers", []) if c["name"] == name)

    def restart_container(self, pod: Pod, name: str) -> str:
        """What kubelet does for restartPolicy Always once a container has exited: a new attempt."""
        old = pod.containers[name]
        try:
            self.cri.stop_container(old, timeout=0)
        except CRIError:
            pass
        self.cri.remove_container(old)
        return self._start(pod, self.container_spec(pod, name), self._volumes(pod))

    def wait_exit(self, cid: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            st = self.cri.container_status(cid)
            if st.state == api.CONTAINER_EXITED:
                return st.exit_code
            if time.monotonic() > deadline:
                raise PodFailed(f"container {st.metadata.name} did not exit within {timeout:.0f}s")
            time.sleep(0.1)

    def logs(self, pod: Pod, name: str) -> str:
        path = Path(pod.config.log_directory) / f"{name}/{pod.attempts.get(name, 0)}.log"
        try:
            return path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    # --- probes ------------------------------------------------------------------------
    def probe(self, pod: Pod, name: str, kind: str = "readinessProbe") -> bool:
        spec = self.container_spec(pod, name).get(kind)
        if not spec:
            return True
        if "exec" not in spec:
            raise NotSupported(f"{kind} {sorted(spec)} (exec probes only)")
        try:
            r = self.cri.exec_sync(pod.containers[name], spec["exec"]["command"], timeout=int(spec.get("timeoutSeconds", 1)))
        except CRIError:
            return False
        return r.exit_code == 0

    def running(self, pod: Pod, name: str) -> bool:
        return self.cri.container_status(pod.containers[name]).state == api.CONTAINER_RUNNING

    def wait_ready(self, pod: Pod, timeout: float = 60) -> float:
        """Every container running and passing its readiness probe; returns the seconds it took."""
        start = time.monotonic()
        pending = [c["name"] for c in pod.spec.get("containers", [])]
        while pending:
            name = pending[0]
            st = self.cri.container_status(pod.containers[name])
            if st.state == api.CONTAINER_EXITED:
                raise PodFailed(f"container {name} exited {st.exit_code}: {self.logs(pod, name)}")
            if st.state == api.CONTAINER_RUNNING and self.probe(pod, name, "startupProbe") \
                    and self.probe(pod, name, "readinessProbe"):
                pending.pop(0)
                continue
            if time.monotonic() - start > timeout:
                raise PodFailed(f"container {name} not ready within {timeout:.0f}s: {self.logs(pod, name)}")
            time.sleep(0.1)
        return time.monotonic() - start

    def pid(self, pod: Pod, name: str) -> int:
        """The container's main process, as the runtime reports it (ContainerStatus, verbose)."""
        info = self.cri.container_status_info(pod.containers[name])
        return int(json.loads(info["info"])["pid"])

    def exec(self, pod: Pod, name: str, *cmd: str, timeout: int = 10) -> api.ExecSyncResponse:
        return self.cri.exec_sync(pod.containers[name], list(cmd), timeout=timeout)

    def delete_all(self) -> None:
        for pod in list(self.pods.values()):
            try:
                self.delete_pod(pod, grace=0)
            except CRIError:
                pass
