"""The simulator's mini-runtime (sim/runtime.py) driving the reference plugins inside a throwaway
node namespace: VERSION first, ADD threading prevResult, CHECK, DEL twice, clear failures."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import require_tool
from vnetcni.cni.errors import CNIError, INCOMPATIBLE_VERSION, PLUGIN_NOT_AVAILABLE
from vnetcni.sim.runtime import CniRuntime, k8s_args

REF = "/usr/lib/cni"


def _conflist(state_dir: str, version: str = "1.0.0") -> dict:
    return {
        "cniVersion": version,
        "name": "vntref",
        "plugins": [
            {"type": "bridge", "bridge": "vntbr0", "ipam": {
                "type": "host-local", "dataDir": state_dir,
                "ranges": [[{"subnet": "10.251.0.0/24", "gateway": "10.251.0.1"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _links(netns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", netns, "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


@pytest.fixture
def ref_plugins():
    for name in ("bridge", "host-local", "portmap"):
        require_tool(f"{REF}/{name}")
    return [REF]


def test_chain_runs_inside_the_node_with_version_first_and_prev_result_threaded(node_ns, pod_ns, state_dir,
                                                                              ref_plugins):
    calls = []
    rt = CniRuntime(_conflist(state_dir), cni_path=ref_plugins, netns_exec=node_ns,
                    observer=lambda verb, plugin, s: calls.append((verb, plugin)))
    pod, path = pod_ns()
    cid = "a" * 64
    args = k8s_args("default", "web", cid)
    root_before = set(os.listdir("/sys/class/net"))

    result = rt.add(cid, path, "eth0", args, runtime_config={"portMappings": []})

    assert calls == [("VERSION", "bridge"), ("VERSION", "portmap"), ("ADD", "bridge"), ("ADD", "portmap")]
    # portmap got bridge's result as prevResult and passed it on: the chain's result is bridge's.
    assert result["ips"][0]["address"].startswith("10.251.0.")
    assert any(i.get("sandbox") == path for i in result["interfaces"])
    assert "vntbr0" in _links(node_ns)  # the plugin ran inside the node...
    assert set(os.listdir("/sys/class/net")) == root_before  # ...and nothing appeared on the machine
    assert "eth0" in _links(pod)

    rt.check(cid, path, "eth0", args, prev_result=result)
    rt.delete(cid, path, "eth0", args, prev_result=result)
    rt.delete(cid, "", "eth0", args)  # containerd's second DEL: no netns, no prevResult
    assert "eth0" not in _links(pod)
    assert [c for c in calls if c[0] == "DEL"] == [("DEL", "portmap"), ("DEL", "bridge")] * 2
    assert calls.count(("VERSION", "bridge")) == 1  # asked once per runtime object


def test_a_plugin_that_does_not_speak_the_list_version_fails_before_any_add(node_ns, pod_ns, state_dir,
                                                                          ref_plugins):
    calls = []
    rt = CniRuntime(_conflist(state_dir, "1.1.0"), cni_path=ref_plugins, netns_exec=node_ns,
                    observer=lambda verb, plugin, s: calls.append(verb))
    _, path = pod_ns()
    with pytest.raises(CNIError) as err:
        rt.add("b" * 64, path, "eth0", k8s_args("default", "web", "b" * 64))
    assert err.value.code == INCOMPATIBLE_VERSION
    assert "1.1.0" in err.value.msg
    assert "ADD" not in calls


def test_a_missing_plugin_is_plugin_not_available(node_ns, pod_ns, state_dir):
    rt = CniRuntime(_conflist(state_dir), cni_path=[state_dir], netns_exec=node_ns)
    _, path = pod_ns()
    with pytest.raises(CNIError) as err:
        rt.add("c" * 64, path, "eth0")
    assert err.value.code == PLUGIN_NOT_AVAILABLE


def test_an_add_failure_is_the_plugins_error_object(node_ns, pod_ns, state_dir, ref_plugins):
    conf = _conflist(state_dir)
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.251.0.0/30"}]]  # one usable address
    rt = CniRuntime(conf, cni_path=ref_plugins, netns_exec=node_ns)
    (_, first), (_, second) = pod_ns(), pod_ns()
    rt.add("d" * 64, first, "eth0")
    with pytest.raises(CNIError) as err:
        rt.add("e" * 64, second, "eth0")
    assert "no IP addresses available" in err.value.msg
    rt.delete("e" * 64, second, "eth0")  # cleaning up after a failed ADD is the caller's DEL
    rt.delete("d" * 64, first, "eth0")
