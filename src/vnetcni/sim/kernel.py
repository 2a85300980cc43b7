"""Thin wrappers over `ip`: namespaces, links, statistics.

The simulator only ever addresses objects inside namespaces it created (`ip -n NS ...`); nothing
here touches the root namespace's links, addresses or routes.
"""

from __future__ import annotations

import json
import os
import subprocess

from ..dataplane.netns import NETNS_DIR, netns_path
from .errors import SimError


def run(argv: list[str], *, stdin: str | None = None, check: bool = True,
        timeout: float = 60.0) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SimError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SimError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise SimError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def ip(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ip -n NETNS ...`: always scoped to one of our namespaces."""
    if not netns:
        raise SimError("refusing to run ip outside a namespace")
    return run(["ip", "-n", netns, *args], check=check)


def netns_list() -> set[str]:
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def netns_add(name: str) -> None:
    """A new namespace with its loopback up."""
    run(["ip", "netns", "add", name])
    try:
        ip(name, "link", "set", "lo", "up")
    except BaseException:
        netns_del(name)
        raise


def netns_del(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "del", name], check=False)


def netns_pids(name: str) -> list[int]:
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def exec_in(netns: str, argv: list[str], *, stdin: str | None = None, check: bool = True,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a command inside a namespace (with its own /sys, as `ip netns exec` mounts it)."""
    return run(["ip", "netns", "exec", netns, *argv], stdin=stdin, check=check, timeout=timeout)


def links(netns: str) -> list[dict]:
    """`ip -j link` of a namespace."""
    return json.loads(ip(netns, "-j", "link", "show").stdout or "[]")


def addresses(netns: str, ifname: str) -> list[str]:
    """IPv4 addresses (CIDR) of an interface in a namespace; [] when it does not exist."""
    proc = ip(netns, "-j", "-4", "addr", "show", "dev", ifname, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    out = []
    for link in json.loads(proc.stdout):
        for a in link.get("addr_info", []):
            out.append(f"{a['local']}/{a['prefixlen']}")
    return out


# What every Kubernetes node has ("container runtime prerequisites"), inside a node's namespace:
# kube-proxy's rules must see bridged traffic and the node must route what they DNAT.
K8S_NODE_SYSCTLS = ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1")


def require_br_netfilter() -> None:
    """br_netfilter present (loading a module is machine-wide but changes no namespace's settings
    by itself: every namespace's bridge-nf-call-* starts at its own default)."""
    if os.path.isdir("/proc/sys/net/bridge"):
        return
    run(["modprobe", "br_netfilter"], check=False)
    if not os.path.isdir("/proc/sys/net/bridge"):
        raise SimError("the br_netfilter kernel module is not available (`modprobe br_netfilter` failed): "
                       "simulated nodes cannot run kube-proxy's rules over the bridge")


def configure_as_kubernetes_node(netns: str) -> None:
    """The node prerequisites, set in this node's namespace only (never the machine's)."""
    exec_in(netns, ["sysctl", "-q", "-w", *K8S_NODE_SYSCTLS])
