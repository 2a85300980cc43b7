"""Finding the host side of a pod of another CNI (no records of ours), the way an operator would:

1. veth peer link: the pod's eth0 names its peer by index (IFLA_LINK) in the namespace with id
   IFLA_LINK_NETNSID; if that id is the node's namespace, the peer is the host interface;
2. route: a routed CNI (Calico, ptp) has a route to the pod address straight out of its veth;
3. bridge forwarding table: on a bridge CNI the route points at the bridge; the neighbour table
   gives the pod's MAC and the bridge's fdb the port that MAC was learned on.
Each answer says which method found it, so the operator can trust (or check) it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..dataplane.netns import NETNS_DIR, netns_path
from . import netlink
from .errors import CaptureError, PodNotFound
from .nodes import Node

METHOD_STATE = "endpoint state"
METHOD_PEER = "veth peer link"
METHOD_ROUTE = "route"
METHOD_FDB = "bridge fdb"


@dataclass
class HostSide:
    """Where a pod's traffic can be seen from its node."""

    host_if: str
    host_index: int
    bridge: str | None
    method: str
    detail: str
    pod_netns: str | None = None
    pod_if: str = "eth0"
    ips: list[str] = field(default_factory=list)
    mac: str | None = None


@dataclass
class PodLink:
    """The pod's own end: its eth0 as seen inside its namespace."""

    netns: str
    ifname: str
    index: int
    peer_index: int | None
    peer_netnsid: int | None
    node_netnsid: int | None
    ips: list[str]
    mac: str | None


def read_pod_link(pod_netns: str, node: Node, ifname: str = "eth0") -> PodLink:
    try:
        with netlink.route_socket(pod_netns) as ipr:
            link = netlink.link_named(ipr, ifname)
            if link is None:
                raise PodNotFound(f"network namespace {pod_netns} has no interface {ifname}")
            ips = [a.split("/")[0] for a in netlink.addresses(ipr, link["index"])]
            return PodLink(pod_netns, ifname, link["index"], link["link"], link["link_netnsid"],
                           netlink.netnsid_of(ipr, node.netns), ips, link["mac"])
    except CaptureError as exc:
        raise PodNotFound(exc.message) from None


def by_peer_link(pod: PodLink, node: Node) -> HostSide | None:
    """The node-side veth of the pod's eth0, or None when its peer is not in this node."""
    if pod.peer_index is None or pod.peer_netnsid is None:
        return None
    if pod.node_netnsid is None or pod.peer_netnsid != pod.node_netnsid:
        return None
    with netlink.route_socket(node.netns) as ipr:
        all_links = netlink.links(ipr)
    peer = all_links.get(pod.peer_index)
    if peer is None or peer["kind"] != "veth":
        return None
    bridge = all_links.get(peer["master"], {}).get("name") if peer["master"] else None
    detail = (f"{pod.ifname} in {pod.netns} has IFLA_LINK={pod.peer_index} in link-netnsid "
              f"{pod.peer_netnsid} (the node's namespace): {peer['name']}")
    return HostSide(peer["name"], peer["index"], bridge, METHOD_PEER, detail, pod.netns,
                    pod.ifname, pod.ips, pod.mac)


def by_address(address: str, node: Node) -> HostSide | None:
    """The node interface behind a pod address: a direct route to a veth, or bridge fdb."""
    with netlink.route_socket(node.netns) as ipr:
        all_links = netlink.links(ipr)
        oif = netlink.route_oif(ipr, address)
        out = all_links.get(oif) if oif else None
        if out is None:
            return None
        if out["name"] == node.uplink:
            return None
        if out["kind"] == "veth":
            bridge = all_links.get(out["master"], {}).get("name") if out["master"] else None
            return HostSide(out["name"], out["index"], bridge, METHOD_ROUTE,
                            f"the route to {address} goes out of {out['name']}", ips=[address])
        if out["kind"] != "bridge":
            return None
        neighbour = netlink.neighbour_mac(ipr, address)
        if neighbour is None:
            return None
        mac, _ = neighbour
        port = netlink.fdb_port(ipr, out["index"], mac)
    port_link = all_links.get(port) if port else None
    if port_link is None or port_link["kind"] != "veth" or port_link["name"] == node.uplink:
        return None
    detail = (f"the route to {address} goes to bridge {out['name']}; neighbour {address} is {mac}; "
              f"{out['name']}'s forwarding table has {mac} on port {port_link['name']}")
    return HostSide(port_link["name"], port_link["index"], out["name"], METHOD_FDB, detail,
                    ips=[address], mac=mac)


def netns_holding(address: str) -> list[str]:
    """The named network namespaces (/run/netns/*) with an interface that has `address` (several
    namespaces may reuse one address; the caller keeps the one peered into its node)."""
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []
    found = []
    for name in names:
        path = netns_path(name)
        try:
            with netlink.route_socket(path) as ipr:
                if any(a.split("/")[0] == address for a in netlink.addresses(ipr)):
                    found.append(path)
        except (OSError, CaptureError):
            continue
    return found
