"""What the plugins ask of the dataplane, independent of netlink (so a fake can stand in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from ..cni.errors import CNIError, DATAPLANE_FAILURE

if TYPE_CHECKING:
    from .prereqs import NodeFacts


class LinkExists(CNIError):
    """The veth could not be created: a link of one of its names exists (node or pod side)."""

    def __init__(self, msg: str) -> None:
        super().__init__(DATAPLANE_FAILURE, msg)


@dataclass(frozen=True)
class PodLinkSpec:
    """One pod attachment: a veth whose pod end is created directly inside the pod's netns.

    Bridge mode: the host end is a port of `bridge`. Routed (transparent) mode, bridge "": the
    host end stands alone, the node routes each pod address to it (a /32 or /128 route), and
    in the pod each of `host_gateways` (link-local addresses) is a permanent neighbour entry
    pointing at the host end's MAC, so the pod's default route reaches the node without ARP/ND.
    """

    netns: str  # path of the pod's network namespace
    ifname: str  # pod end, e.g. eth0
    host_ifname: str  # host end, e.g. azv5a6822c76a3
    bridge: str  # "" = routed
    mtu: int
    addresses: tuple[str, ...]  # CIDR, e.g. ("10.240.0.36/16",)
    routes: tuple[tuple[str, str], ...]  # (dst CIDR, gateway or "")
    host_gateways: tuple[str, ...] = ()  # routed: pod-side neighbours pinned to the host end's MAC

    @property
    def routed(self) -> bool:
        return not self.bridge


@dataclass(frozen=True)
class PodLink:
    host_mac: str
    pod_mac: str


@dataclass(frozen=True)
class BridgeInfo:
    name: str
    mac: str
    index: int = 0


@dataclass
class PodView:
    """What the kernel shows of a pod's interface (for CHECK)."""

    exists: bool
    mac: str = ""
    up: bool = False
    mtu: int = 0
    addresses: list[str] = field(default_factory=list)
    routes: list[tuple[str, str]] = field(default_factory=list)
    neighbours: dict[str, str] = field(default_factory=dict)  # permanent entries: address -> MAC


@dataclass
class HostView:
    exists: bool
    master: str = ""
    up: bool = False
    mac: str = ""
    routes: list[str] = field(default_factory=list)  # node routes out of this link (dst CIDRs)
    neighbours: dict[str, str] = field(default_factory=dict)  # permanent entries on it: address -> MAC
    hairpin: bool = False


class Dataplane(Protocol):
    def ensure_bridge(self, name: str, mtu: int, uplink: str = "", gateway: str = "") -> BridgeInfo:
        """Create (or find) the bridge and bring it up. With `uplink`, enslave it and move its
        addresses and routes to the bridge; otherwise give the bridge `gateway` (a CIDR)."""

    def create_pod_link(self, spec: PodLinkSpec) -> PodLink:
        """Create and configure the veth pair; on failure nothing of it is left behind."""

    def delete_pod_link(self, host_ifname: str) -> bool:
        """Remove the pair (deleting one end removes both). False if it was already gone."""

    def begin_delete_pod_link(self, host_ifname: str) -> "Callable[[], bool]":
        """delete_pod_link started in the background; the returned wait() gives its result."""

    def inspect_pod(self, netns: str, ifname: str) -> PodView: ...

    def inspect_host(self, host_ifname: str) -> HostView: ...

    def uplink_mtu(self, uplink: str) -> int: ...

    def node_facts(self, bridge: str) -> "NodeFacts":
        """The node's settings kube-proxy needs with a bridge (judged by prereqs.evaluate)."""
