"""The plugins without vnetd start a Python on every pod event: what that Python imports is paid
on each call (issue 14). These tests run real in-process calls (the installed Python entry, as
the compiled front door execs it when no vnetd listens) with `-X importtime` and check, by name,
that the start-up path loads none of the heavy modules. A count check, never a timing."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

# Each of these costs milliseconds of start-up and has no place on a pod's ADD or DEL without
# vnetd: pyroute2 (150-250 ms), concurrent.futures (logging, traceback, queue), json and re
# (enum, the regex compiler), socket.py (enum, selectors), and the CLI's and vnetd's libraries.
HEAVY = ("pyroute2", "concurrent", "asyncio", "logging", "json", "re", "enum", "socket", "selectors",
         "subprocess", "dataclasses", "typing", "inspect", "urllib", "http", "xml", "defusedxml", "typer",
         "rich", "prometheus_client", "grpc")


def _imported(entry: str, node: str, env: dict, stdin: bytes) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the installed Python entry once with -X importtime (its shebang's interpreter and flags)."""
    with open(entry) as f:
        interpreter, *flags = f.readline()[2:].split()
    proc = subprocess.run(["ip", "netns", "exec", node, interpreter, "-X", "importtime", *flags, entry],
                          input=stdin, env=env, capture_output=True, timeout=120)
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.decode().splitlines()
             if line.startswith("import time:") and "|" in line}
    names.discard("imported package")
    return proc, names


def _heavy(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in HEAVY}


@pytest.mark.parametrize("mode", ["bridge", "transparent"])
def test_in_process_add_and_del_import_nothing_heavy(cni_bin, node_ns, pod_ns, vnet_ipam, mode):
    conf = {"cniVersion": "1.0.0", "name": "lightnet", "type": "vnet",
            **({"bridge": "vntlight0"} if mode == "bridge" else {"mode": mode}),
            "stateDir": vnet_ipam["stateDir"], "ipam": vnet_ipam}
    stdin = json.dumps(conf).encode()
    entry = os.path.join(cni_bin, ".vnet-cni", "vnet")
    seen = {}
    netns = ""
    for i, verb in enumerate(["ADD", "DEL", "ADD", "DEL"]):  # the first ADD sets up the bridge, the pool
        if verb == "ADD":
            netns = pod_ns()[1]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": verb, "CNI_CONTAINERID": f"light{i // 2}",
               "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": cni_bin,
               "VNET_FRONT_DOOR_TRIED": "1"}  # as the front door hands over: vnetd was asked
        proc, names = _imported(entry, node_ns, env, stdin)
        assert proc.returncode == 0, (verb, proc.stdout, proc.stderr[-2000:])
        assert "vnetcni.plugins.vnet" in names and "vnetcni.dataplane.linux" in names
        if i >= 2:
            seen[verb] = names
    for verb, names in seen.items():
        assert not _heavy(names), (verb, sorted(_heavy(names)))
    assert "ctypes" not in seen["DEL"]  # setns only where a namespace is entered (ADD's pod side)


def test_in_process_ipam_imports_nothing_heavy(cni_bin, node_ns, vnet_ipam):
    """vnet-ipam called by another main plugin (the reference bridge, say), without vnetd."""
    conf = {"cniVersion": "1.0.0", "name": "lightnet", "type": "bridge", "ipam": vnet_ipam}
    stdin = json.dumps(conf).encode()
    entry = os.path.join(cni_bin, ".vnet-cni", "vnet-ipam")
    seen = {}
    for i, verb in enumerate(["ADD", "DEL", "ADD", "DEL"]):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": verb, "CNI_CONTAINERID": f"ipam{i // 2}",
               "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "eth0", "CNI_PATH": cni_bin,
               "VNET_FRONT_DOOR_TRIED": "1"}
        proc, names = _imported(entry, node_ns, env, stdin)
        assert proc.returncode == 0, (verb, proc.stdout, proc.stderr[-2000:])
        assert "vnetcni.ipam.plugin" in names
        if i == 0:  # the first ADD fetched the pool (refreshSeconds later, an ADD does it again)
            assert "vnetcni.ipam.sources" in names
            parser = ("xml", "defusedxml", "re", "enum")  # the hardened XML parser and what it imports
            fetched = {n for n in _heavy(names) if n.split(".")[0] not in parser}
            assert not fetched, sorted(fetched)
        else:
            seen[verb] = names
    for verb, names in seen.items():
        assert not _heavy(names), (verb, sorted(_heavy(names)))


def test_a_fresh_node_sets_its_bridge_up_without_pyroute2(cni_bin, node_ns, pod_ns, vnet_ipam):
    """A node's first pods at once, without vnetd: one call sets the bridge up under the
    node-wide lock, through the light channel (a bridge without an uplink needs no pyroute2);
    the calls that queued on the lock meanwhile find it finished with the light look (before,
    each imported pyroute2 in turn: 8 callers, the last ~3.5 s)."""
    import threading

    conf = {"cniVersion": "1.0.0", "name": "lightnet", "type": "vnet", "bridge": "vntfresh0",
            "stateDir": vnet_ipam["stateDir"], "ipam": vnet_ipam}
    stdin = json.dumps(conf).encode()
    entry = os.path.join(cni_bin, ".vnet-cni", "vnet")
    n = 4
    netns = [pod_ns()[1] for _ in range(n)]
    results: list = [None] * n
    gate = threading.Barrier(n)

    def add(i: int) -> None:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"fresh{i}",
               "CNI_NETNS": netns[i], "CNI_IFNAME": "eth0", "CNI_PATH": cni_bin, "VNET_FRONT_DOOR_TRIED": "1"}
        gate.wait()
        results[i] = _imported(entry, node_ns, env, stdin)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for proc, _ in results:
        assert proc.returncode == 0, (proc.stdout, proc.stderr[-2000:])
    parser = ("xml", "defusedxml", "re", "enum")  # the pool's first fetch (one of the calls)
    heavy = [sorted(n for n in _heavy(names) if n.split(".")[0] not in parser) for _, names in results]
    assert not any(heavy), heavy
    bridge = subprocess.run(["ip", "-n", node_ns, "-d", "-j", "link", "show", "vntfresh0"], capture_output=True,
                            text=True, check=True).stdout
    info = json.loads(bridge)[0]
    assert "UP" in info["flags"] and info["linkinfo"]["info_data"]["nf_call_iptables"] == 1
    ports = subprocess.run(["ip", "-n", node_ns, "-j", "link", "show", "master", "vntfresh0"], capture_output=True,
                           text=True, check=True).stdout
    assert len(json.loads(ports)) == n
