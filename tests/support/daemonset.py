"""The DaemonSet from deploy/ run on one node by the kubelet stand-in: its pod template as written
(hostPath volumes land on the node's stand-in directories), the ConfigMaps it references, a
rollout to another image tag as the DaemonSet controller does it (RollingUpdate, maxUnavailable 1:
the old pod goes, with its grace period, before the new one is created)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import yaml

from support.kubelet import Kubelet, Pod

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def manifests(directory: Path = DEPLOY) -> list[dict]:
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


class DaemonSet:
    def __init__(self, kubelet: Kubelet, docs: list[dict] | None = None) -> None:
        docs = docs if docs is not None else manifests()
        found = [d for d in docs if d.get("kind") == "DaemonSet"]
        assert len(found) == 1, f"deploy/ holds {len(found)} DaemonSets"
        self.manifest = found[0]
        self.name = self.manifest["metadata"]["name"]
        self.namespace = self.manifest["metadata"].get("namespace", "default")
        self.config_maps = {f"{d['metadata'].get('namespace', 'default')}/{d['metadata']['name']}": d
                            for d in docs if d.get("kind") == "ConfigMap"}
        self.kubelet = kubelet
        kubelet.config_maps.update(self.config_maps)
        self.pod: Pod | None = None
        self._serial = 0

    @property
    def template(self) -> dict:
        return self.manifest["spec"]["template"]

    def images(self) -> set[str]:
        spec = self.template["spec"]
        return {c["image"] for c in spec.get("initContainers", []) + spec["containers"]}

    def config_map(self, name: str) -> dict:
        return self.config_maps[f"{self.namespace}/{name}"]

    def set_image(self, image: str) -> None:
        """What `kubectl set image` does to every container of the template."""
        spec = self.template["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            c["image"] = image

    def start(self, ready_timeout: float = 90) -> Pod:
        """The DaemonSet controller creates the node's pod; the stand-in runs it until ready."""
        self._serial += 1
        name = f"{self.name}-{self._serial:05x}"
        labels = dict(self.template.get("metadata", {}).get("labels", {}))
        self.pod = self.kubelet.run_pod(name, copy.deepcopy(self.template["spec"]), namespace=self.namespace,
                                        labels=labels, ready_timeout=ready_timeout)
        return self.pod

    def rollout(self, image: str, ready_timeout: float = 90) -> tuple[Pod, float]:
        """RollingUpdate with maxUnavailable 1 on one node: the old pod is deleted (grace period
        honoured), then the new one runs. Returns the new pod and the seconds without an agent."""
        strategy = self.manifest["spec"].get("updateStrategy", {})
        assert strategy.get("type", "RollingUpdate") == "RollingUpdate", strategy
        self.set_image(image)
        start = time.monotonic()
        if self.pod is not None:
            self.kubelet.delete_pod(self.pod)
        pod = self.start(ready_timeout)
        return pod, time.monotonic() - start

    def delete(self) -> None:
        if self.pod is not None:
            self.kubelet.delete_pod(self.pod)
            self.pod = None


def conflist_of(config_map: dict, key: str = "10-vnet.conflist") -> dict:
    return json.loads(config_map["data"][key])
