"""Pods on a simulated node, created as a container runtime does it.

ADD: a new network namespace for the sandbox, then the node's CNI chain inside the node
(VERSION, ADD with kubelet's CNI_ARGS, prevResult threading). When ADD fails the runtime tears the
sandbox down like containerd: DEL without prevResult, then the namespace is deleted, so a
refused pod leaves nothing behind.
DEL: as containerd, twice: at sandbox stop with the netns and the cached result, at sandbox
removal with CNI_NETNS="" and no prevResult; then the namespace goes.
The fabric's pod records (which pod is where, its container ID and cached result) live in
<fabric dir>/pods.json.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
from dataclasses import asdict, dataclass

from ..cni.errors import CNIError
from ..dataplane.netns import netns_path
from ..state.durable import DurableDocument
from . import kernel, naming
from .errors import SimError
from .model import FabricRecord, NodeRecord
from .runtime import CniRuntime, k8s_args

POD_IFNAME = "eth0"
POD_FILE = "pods.json"


@dataclass
class PodRecord:
    node: str
    namespace: str
    name: str
    containerId: str
    netns: str
    ifname: str
    result: dict
    created: str

    @property
    def key(self) -> str:
        return pod_key(self.namespace, self.name)

    @property
    def netns_path(self) -> str:
        return netns_path(self.netns)

    @property
    def address(self) -> str:
        """The pod's first address, without the prefix length."""
        ips = self.result.get("ips") or []
        return ips[0]["address"].split("/")[0] if ips else ""

    @property
    def address6(self) -> str:
        """Dual-stack: the pod's IPv6 address, without the prefix length ("" without one)."""
        six = [ip["address"].split("/")[0] for ip in self.result.get("ips") or [] if ":" in ip["address"]]
        return six[0] if six else ""

    def _pod_interface(self) -> dict:
        for iface in self.result.get("interfaces") or []:
            if iface.get("sandbox"):
                return iface
        return {}

    @property
    def mac(self) -> str:
        return self._pod_interface().get("mac", "")

    @property
    def host_ifname(self) -> str:
        """The node-side end of the pod's veth: the last interface of the result outside the pod."""
        host = [i for i in self.result.get("interfaces") or [] if not i.get("sandbox")]
        return host[-1]["name"] if host else ""


def pod_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _store(fabric: FabricRecord) -> DurableDocument:
    return DurableDocument(os.path.join(fabric.directory, POD_FILE), "vnet-sim-pods", 1, lambda: {"pods": {}})


def runtime_for(node: NodeRecord, **kwargs) -> CniRuntime:
    """The node's CNI runtime: its conflist and binaries, every plugin run inside the node."""
    return CniRuntime(node.conflist, cni_path=[node.cniBinDir], netns_exec=node.netns, **kwargs)


def list_pods(fabric: FabricRecord, node: str | None = None) -> list[PodRecord]:
    pods = [PodRecord(**p) for p in _store(fabric).read()["pods"].values()]
    return sorted((p for p in pods if node is None or p.node == node),
                  key=lambda p: (p.node, p.namespace, p.name))


def get_pod(fabric: FabricRecord, namespace: str, name: str) -> PodRecord | None:
    raw = _store(fabric).read()["pods"].get(pod_key(namespace, name))
    return PodRecord(**raw) if raw else None


def add_pod(fabric: FabricRecord, node_name: str, name: str, namespace: str = "default",
            runtime: CniRuntime | None = None) -> PodRecord:
    """Create the sandbox's namespace and ADD it on the node; CNIError when the chain refuses."""
    naming.check_pod_name("pod name", name)
    naming.check_pod_name("namespace", namespace)
    node = fabric.node(node_name)
    if get_pod(fabric, namespace, name) is not None:
        raise SimError(f"pod {namespace}/{name} already exists in fabric {fabric.name!r}")
    rt = runtime or runtime_for(node)
    container_id = secrets.token_hex(32)
    netns = naming.pod_netns(fabric.name, container_id)
    path = netns_path(netns)
    args = k8s_args(namespace, name, container_id)
    kernel.netns_add(netns)
    try:
        result = rt.add(container_id, path, POD_IFNAME, args)
    except BaseException:
        with contextlib.suppress(CNIError):
            rt.delete(container_id, path, POD_IFNAME, args)
        kernel.netns_del(netns)
        raise
    record = PodRecord(node=node.name, namespace=namespace, name=name, containerId=container_id,
                       netns=netns, ifname=POD_IFNAME, result=result,
                       created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    with _store(fabric).transaction() as doc:
        taken = record.key in doc["pods"]
        if not taken:
            doc["pods"][record.key] = asdict(record)
    if taken:  # a concurrent `pod add` of the same pod won the race: undo ours
        _teardown(rt, record)
        raise SimError(f"pod {namespace}/{name} already exists in fabric {fabric.name!r}")
    return record


def delete_pod(fabric: FabricRecord, node_name: str, name: str, namespace: str = "default",
               runtime: CniRuntime | None = None) -> PodRecord:
    """DEL twice as containerd does, then remove the namespace and the record."""
    record = get_pod(fabric, namespace, name)
    if record is None:
        raise SimError(f"no pod {namespace}/{name} in fabric {fabric.name!r}")
    if record.node != node_name:
        raise SimError(f"pod {namespace}/{name} runs on {record.node}, not on {node_name}")
    _teardown(runtime or runtime_for(fabric.node(record.node)), record)
    with _store(fabric).transaction() as doc:
        doc["pods"].pop(record.key, None)
    from . import kubeproxy  # imports this module

    kubeproxy.endpoint_gone(fabric, record.key)
    return record


def _teardown(rt: CniRuntime, record: PodRecord) -> None:
    """DEL twice, then remove the sandbox's namespace; the namespace goes even when a DEL fails,
    so a failed teardown never strands it (a DEL retried later works from the plugin's records)."""
    args = k8s_args(record.namespace, record.name, record.containerId)
    sandbox = record.netns_path if kernel.netns_exists(record.netns) else ""
    try:
        rt.delete(record.containerId, sandbox, record.ifname, args, prev_result=record.result)
        rt.delete(record.containerId, "", record.ifname, args)
    finally:
        kernel.netns_del(record.netns)


def node_usage(fabric: FabricRecord, listed: list[PodRecord] | None = None) -> dict[str, int]:
    """Pods per node, from the fabric's records (or from `listed`, when the caller already read them)."""
    usage = {n.name: 0 for n in fabric.nodes}
    for p in list_pods(fabric) if listed is None else listed:
        usage[p.node] = usage.get(p.node, 0) + 1
    return usage
