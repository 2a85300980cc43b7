"""A small CNI runtime (what libcni does for containerd and podman), for the simulator, tests and
benchmarks.

    rt = CniRuntime("/run/vnet-sim/demo/node1/10-vnet.conflist", cni_path=[bin_dir],
                    netns_exec="vsim-demo-node1")
    result = rt.add(cid, "/run/netns/pod", "eth0", k8s_args("default", "web", cid))
    rt.delete(cid, "/run/netns/pod", "eth0", args, prev_result=result)   # stop the sandbox
    rt.delete(cid, "", "eth0", args)                                     # remove it (containerd)

- VERSION is asked of every plugin once per runtime object, before its first ADD/CHECK/DEL, and a
  plugin that does not speak the conflist's version fails the call (as podman does every command).
- ADD runs the chain in order, threading each plugin's result into the next one's prevResult;
  CHECK runs in order with the cached result; DEL runs in reverse with it (or without, as
  containerd's second DEL does). The first failure stops the chain and is raised as CNIError:
  like libcni, cleaning up after a failed ADD is the caller's DEL.
- netns_exec: a simulated node's namespace; every plugin then runs inside it through
  `ip netns exec`, which also gives it that namespace's /sys (so a plugin reading
  /sys/class/net/eth0 sees the node's eth0, never the machine's).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Mapping, Sequence

from ..cni import versions
from ..cni.config import ConfList, parse_conflist
from ..cni.errors import CNIError, INCOMPATIBLE_VERSION, INVALID_CONFIG
from ..cni.exec import exec_plugin, find_plugin

DEFAULT_CNI_PATH = ("/opt/cni/bin", "/usr/lib/cni")

# Called after every plugin execution: (verb, plugin type, seconds).
Observer = Callable[[str, str, float], None]


def k8s_args(pod_namespace: str, pod_name: str, container_id: str) -> dict[str, str]:
    """CNI_ARGS as kubelet's runtimes pass them for a pod sandbox."""
    return {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": pod_namespace,
        "K8S_POD_NAME": pod_name,
        "K8S_POD_INFRA_CONTAINER_ID": container_id,
    }


def _load(conflist: str | Mapping) -> ConfList:
    if isinstance(conflist, Mapping):
        return parse_conflist(dict(conflist))
    try:
        with open(conflist, "rb") as f:
            return parse_conflist(f.read())
    except OSError as exc:
        raise CNIError(INVALID_CONFIG, f"cannot read configuration list {conflist}: {exc.strerror}") from None


class CniRuntime:
    """Runs one network configuration list's chain of plugins for pod sandboxes."""

    def __init__(self, conflist: str | Mapping, cni_path: Sequence[str] = DEFAULT_CNI_PATH,
                 netns_exec: str | None = None, timeout: float = 120.0,
                 observer: Observer | None = None) -> None:
        self.conf = _load(conflist)
        self.cni_path = tuple(cni_path)
        self.netns_exec = netns_exec
        self.timeout = timeout
        self.observer = observer
        self._binaries: list[str] | None = None

    @property
    def network_name(self) -> str:
        return self.conf.name

    # --- the verbs -----------------------------------------------------------------------
    def add(self, container_id: str, netns_path: str, ifname: str = "eth0",
            args: Mapping[str, str] | None = None, runtime_config: Mapping | None = None) -> dict:
        """ADD through the chain; the last plugin's result."""
        binaries = self._checked_binaries()
        prev: dict | None = None
        for index, binary in enumerate(binaries):
            conf = self.conf.plugin_config(index, prev, dict(runtime_config or {}))
            out = self._exec("ADD", binary, conf, container_id, netns_path, ifname, args)
            if out is None:
                raise CNIError(INVALID_CONFIG, f"plugin {self.conf.plugins[index]['type']} returned no result for ADD")
            prev = out
        assert prev is not None
        return prev

    def check(self, container_id: str, netns_path: str, ifname: str = "eth0",
              args: Mapping[str, str] | None = None, runtime_config: Mapping | None = None,
              prev_result: dict | None = None) -> None:
        """CHECK through the chain with the cached result (skipped when the list disables it)."""
        if not versions.at_least(self.conf.cni_version, "0.4.0"):
            raise CNIError(INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, "
                                                 f"the list is {self.conf.cni_version}")
        if self.conf.disable_check:
            return
        for index, binary in enumerate(self._checked_binaries()):
            conf = self.conf.plugin_config(index, prev_result, dict(runtime_config or {}))
            self._exec("CHECK", binary, conf, container_id, netns_path, ifname, args)

    def delete(self, container_id: str, netns_path: str = "", ifname: str = "eth0",
               args: Mapping[str, str] | None = None, runtime_config: Mapping | None = None,
               prev_result: dict | None = None) -> None:
        """DEL through the chain in reverse order; netns_path may be "" (sandbox already gone)."""
        binaries = self._checked_binaries()
        for index in reversed(range(len(binaries))):
            conf = self.conf.plugin_config(index, prev_result, dict(runtime_config or {}))
            self._exec("DEL", binaries[index], conf, container_id, netns_path, ifname, args)

    # --- plumbing ------------------------------------------------------------------------
    def _resolve(self) -> list[str]:
        return [find_plugin(p["type"], self.cni_path) for p in self.conf.plugins]

    def _version_of(self, binary: str) -> dict:
        stdin = json.dumps({"cniVersion": self.conf.cni_version}).encode()
        out = self._run("VERSION", binary, {"CNI_COMMAND": "VERSION"}, stdin)
        return out or {}

    def _checked_binaries(self) -> list[str]:
        if self._binaries is None:
            binaries = self._resolve()
            for binary in binaries:
                supported = self._version_of(binary).get("supportedVersions") or []
                if self.conf.cni_version not in supported:
                    raise CNIError(INCOMPATIBLE_VERSION,
                                   f"plugin {os.path.basename(binary)} does not support cniVersion "
                                   f"{self.conf.cni_version} (it speaks {', '.join(supported) or 'nothing'})")
            self._binaries = binaries
        return self._binaries

    def _exec(self, verb: str, binary: str, conf: dict, container_id: str, netns_path: str,
              ifname: str, args: Mapping[str, str] | None) -> dict | None:
        env = {
            "CNI_COMMAND": verb,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname,
            "CNI_PATH": os.pathsep.join(self.cni_path),
        }
        if args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in args.items())
        return self._run(verb, binary, env, json.dumps(conf).encode())

    def _run(self, verb: str, binary: str, env: dict, stdin: bytes) -> dict | None:
        prefix = ("ip", "netns", "exec", self.netns_exec) if self.netns_exec else ()
        started = time.perf_counter()
        try:
            return exec_plugin(binary, env, stdin, timeout=self.timeout, command_prefix=prefix)
        finally:
            if self.observer is not None:
                self.observer(verb, os.path.basename(binary), time.perf_counter() - started)
