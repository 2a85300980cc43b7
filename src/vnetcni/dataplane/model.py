"""What the plugins ask of the dataplane, independent of netlink (so a fake can stand in)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported at run time (plugin start-up cost)

from ..cni._record import FrozenRecord, Record
from ..cni.errors import CNIError, DATAPLANE_FAILURE

if TYPE_CHECKING:
    from typing import Callable, Protocol

    from .prereqs import NodeFacts
else:
    Protocol = object  # the interface below documents; nothing checks it at run time

# Records, not dataclasses: this module is on every pod's ADD and DEL, and `dataclasses` costs
# a plugin started without vnetd ~20 ms of imports per call (see cni/_record.py).


class LinkExists(CNIError):
    """The veth could not be created: a link of one of its names exists (node or pod side)."""

    def __init__(self, msg: str) -> None:
        super().__init__(DATAPLANE_FAILURE, msg)


class PodLinkSpec(FrozenRecord):
    """One pod attachment: a veth whose pod end is created directly inside the pod's netns.

    Bridge mode: the host end is a port of `bridge`. Routed (transparent) mode, bridge "": the
    host end stands alone, the node routes each pod address to it (a /32 or /128 route), and
    in the pod each of `host_gateways` (link-local addresses) is a permanent neighbour entry
    pointing at the host end's MAC, so the pod's default route reaches the node without ARP/ND.
    """

    __slots__ = ("netns", "ifname", "host_ifname", "bridge", "mtu", "addresses", "routes", "host_gateways")
    netns: str  # path of the pod's network namespace
    ifname: str  # pod end, e.g. eth0
    host_ifname: str  # host end, e.g. azv5a6822c76a3
    bridge: str  # "" = routed
    mtu: int
    addresses: tuple[str, ...]  # CIDR, e.g. ("10.240.0.36/16",)
    routes: tuple[tuple[str, str], ...]  # (dst CIDR, gateway or "")
    host_gateways: tuple[str, ...]  # routed: pod-side neighbours pinned to the host end's MAC

    def __init__(self, netns: str, ifname: str, host_ifname: str, bridge: str, mtu: int,
                 addresses: tuple[str, ...], routes: tuple[tuple[str, str], ...],
                 host_gateways: tuple[str, ...] = ()) -> None:
        self._set(netns=netns, ifname=ifname, host_ifname=host_ifname, bridge=bridge, mtu=mtu,
                  addresses=addresses, routes=routes, host_gateways=host_gateways)

    @property
    def routed(self) -> bool:
        return not self.bridge


class PodLink(FrozenRecord):
    __slots__ = ("host_mac", "pod_mac")
    host_mac: str
    pod_mac: str

    def __init__(self, host_mac: str, pod_mac: str) -> None:
        self._set(host_mac=host_mac, pod_mac=pod_mac)


class BridgeInfo(FrozenRecord):
    __slots__ = ("name", "mac", "index")
    name: str
    mac: str
    index: int

    def __init__(self, name: str, mac: str, index: int = 0) -> None:
        self._set(name=name, mac=mac, index=index)


class PodView(Record):
    """What the kernel shows of a pod's interface (for CHECK)."""

    __slots__ = ("exists", "mac", "up", "mtu", "addresses", "routes", "neighbours")
    exists: bool
    mac: str
    up: bool
    mtu: int
    addresses: list[str]
    routes: list[tuple[str, str]]
    neighbours: dict[str, str]  # permanent entries: address -> MAC

    def __init__(self, exists: bool, mac: str = "", up: bool = False, mtu: int = 0,
                 addresses: list[str] | None = None, routes: list[tuple[str, str]] | None = None,
                 neighbours: dict[str, str] | None = None) -> None:
        self.exists, self.mac, self.up, self.mtu = exists, mac, up, mtu
        self.addresses = addresses if addresses is not None else []
        self.routes = routes if routes is not None else []
        self.neighbours = neighbours if neighbours is not None else {}


class HostView(Record):
    __slots__ = ("exists", "master", "up", "mac", "routes", "neighbours", "hairpin")
    exists: bool
    master: str
    up: bool
    mac: str
    routes: list[str]  # node routes out of this link (dst CIDRs)
    neighbours: dict[str, str]  # permanent entries on it: address -> MAC
    hairpin: bool

    def __init__(self, exists: bool, master: str = "", up: bool = False, mac: str = "",
                 routes: list[str] | None = None, neighbours: dict[str, str] | None = None,
                 hairpin: bool = False) -> None:
        self.exists, self.master, self.up, self.mac = exists, master, up, mac
        self.routes = routes if routes is not None else []
        self.neighbours = neighbours if neighbours is not None else {}
        self.hairpin = hairpin


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
