"""Names of a simulated fabric's objects, and where its state lives.

Every kernel object of a fabric is named `<prefix><fabric>-<role>`, so a crashed run can be found
and swept by name alone even when its fabric.json was never written. The prefix is `vsim-`; the
test suite sets VNET_SIM_PREFIX=vnt so its fabrics fall under the harness's `vnt` sweep too.
Interfaces inside the namespaces need no unique names: each namespace has its own.
"""

from __future__ import annotations

import os
import re

DEFAULT_PREFIX = "vsim-"
DEFAULT_ROOT = "/run/vnet-sim"
DEFAULT_FABRIC = "demo"

FABRIC_BRIDGE = "vnet0"          # the VNet's L2 segment, inside the fabric namespace
NODE_UPLINK = "eth0"             # the node's NIC, inside the node namespace
NODE_BRIDGE = "azure0"           # the bridge the vnet plugin builds on a node
METADATA_PORT = 16999            # the node-local metadata service (127.0.0.1 inside the node)

_FABRIC_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")
_POD_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a DNS-1123 label, as Kubernetes


def prefix() -> str:
    value = os.environ.get("VNET_SIM_PREFIX", DEFAULT_PREFIX)
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,9}", value):
        raise ValueError(f"VNET_SIM_PREFIX {value!r} must be 1-10 lower-case letters, digits or '-'")
    return value


def root_dir() -> str:
    return os.environ.get("VNET_SIM_ROOT", DEFAULT_ROOT)


def check_fabric_name(name: str) -> str:
    if not _FABRIC_RE.match(name or ""):
        raise ValueError(f"invalid fabric name {name!r}: use 1-24 lower-case letters, digits or '-' "
                         "(not at either end)")
    return name


def check_pod_name(kind: str, name: str) -> str:
    if not _POD_RE.match(name or ""):
        raise ValueError(f"invalid {kind} {name!r}: use a DNS label (lower-case letters, digits, '-')")
    return name


def fabric_dir(name: str) -> str:
    return os.path.join(root_dir(), name)


def fabric_netns(name: str) -> str:
    return f"{prefix()}{name}-fabric"


def node_name(index: int) -> str:
    return f"node{index}"


def node_netns(name: str, node: str) -> str:
    return f"{prefix()}{name}-{node}"


def pod_netns(name: str, container_id: str) -> str:
    return f"{prefix()}{name}-pod-{container_id[:12]}"


NETNS_ETC = "/etc/netns"          # `ip netns exec NAME` bind-mounts /etc/netns/NAME/* over /etc/*


def node_cni_conf_dir(netns: str) -> str:
    """A simulated node's /etc/cni/net.d: inside `ip netns exec <node namespace>` it is the one
    at /etc/cni/net.d, so `vnetctl status` and any CNI tool find the node's conflist there."""
    return os.path.join(NETNS_ETC, netns, "cni", "net.d")


def fabric_port(node: str) -> str:
    """The fabric-side end of a node's veth (<= 15 characters for node1..node9999)."""
    return f"p-{node}"


def owned_netns_pattern(name: str) -> re.Pattern[str]:
    """Matches exactly this fabric's namespaces (not those of a fabric whose name extends it)."""
    return re.compile(rf"^{re.escape(prefix() + name)}-(fabric|node\d+|pod-[0-9a-f]{{12}})$")


def metadata_url(port: int = METADATA_PORT) -> str:
    """The node-local metadata service's URL, on the path the service answers (imported here, not
    at module level: ipam.server pulls in http.server, and every `vnetctl` command imports naming)."""
    from ..ipam.server import METADATA_PATH_AND_QUERY

    return f"http://127.0.0.1:{port}{METADATA_PATH_AND_QUERY}"
