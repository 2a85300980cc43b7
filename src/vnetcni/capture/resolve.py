"""From what the operator typed (pod name, address, container ID, netns) to the pod's interfaces.

Our endpoint records come first (exact, and they carry the pod's name); for pods with no record
of ours, discovery (see discovery.py) finds the host side and says how.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..dataplane import netns as nsutil
from ..node.layout import NodeLayout
from . import discovery
from .discovery import HostSide
from .endpoints import (as_address, display_name, load_records, match_records, record_addresses,
                        single_record, split_pod_name)
from .errors import BadInput, CaptureError, PodNotFound, PodOnAnotherNode
from .nodes import Fabric, Node, netns_path


@dataclass
class Pod:
    """A resolved pod: who it is, and where its packets can be captured."""

    name: str
    node: Node
    host: HostSide
    record: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.host.method


def resolve(query: str, namespace: str | None, node: Node, fabric: Fabric | None = None,
            pod_if: str = "eth0") -> Pod:
    """Find the pod on `node`; PodOnAnotherNode when a fabric's other node has it."""
    records = load_records(node.state_dir)
    found = match_records(records, query, namespace)
    if found:
        return from_record(single_record(found, query), node)
    if fabric is not None:
        for other in fabric.nodes:
            if other.name != node.name and match_records(load_records(other.state_dir), query, namespace):
                raise PodOnAnotherNode(query, other.name, node.label)
    return _discover(query, namespace, node, fabric, pod_if, len(records))


def locate(query: str, namespace: str | None, fabric: Fabric) -> Node:
    """The fabric node whose records hold the pod (for commands given no --node)."""
    holders = [n for n in fabric.nodes if match_records(load_records(n.state_dir), query, namespace)]
    if len(holders) == 1:
        return holders[0]
    if len(holders) > 1:
        raise BadInput(f"{query!r} is ambiguous: it matches pods on several nodes: "
                       f"{', '.join(n.name for n in holders)}", "pick one with --node NODE")
    raise PodNotFound(f"no pod {query!r} on any node of fabric {fabric.name}",
                      "name it by pod name, address or container ID; `vnetctl pod add` creates pods")


def from_record(record: dict, node: Node) -> Pod:
    from . import netlink

    host_if = str(record.get("hostIfName") or "")
    with netlink.route_socket(node.netns) as ipr:
        link = netlink.link_named(ipr, host_if) if host_if else None
        all_links = netlink.links(ipr) if link else {}
    if link is None:
        raise PodNotFound(
            f"pod {display_name(record)}'s host interface {host_if or '(none recorded)'} does not "
            f"exist on {node.label}",
            "the endpoint record is stale (pod gone?) or you are on another node: check --node / "
            "--state-dir")
    bridge = all_links.get(link["master"], {}).get("name") if link["master"] else record.get("bridge")
    host = HostSide(host_if, link["index"], bridge, discovery.METHOD_STATE,
                    f"endpoint record {record.get('network')}/{record.get('containerId')}/"
                    f"{record.get('ifName')} in {os.path.join(node.state_dir, 'endpoints.json')}",
                    pod_netns=record.get("netns") or None, pod_if=str(record.get("ifName") or "eth0"),
                    ips=record_addresses(record), mac=record.get("mac"))
    return Pod(display_name(record), node, host, record)


def _netns_from_query(query: str) -> str | None:
    """A pod netns given as a path or as the name of a namespace in /run/netns."""
    if query.startswith("/"):
        return query if os.path.exists(query) else None
    candidate = netns_path(query)
    return candidate if candidate and "/" not in query and os.path.exists(candidate) else None


def _discover(query: str, namespace: str | None, node: Node, fabric: Fabric | None, pod_if: str,
              n_records: int) -> Pod:
    address = as_address(query)
    if address:
        host = None
        for candidate in discovery.netns_holding(address):
            try:
                host = _by_netns(candidate, node, None, pod_if, query, by_address=False)
            except PodNotFound:
                continue
            if host is not None:
                host.detail = f"{address} is on {pod_if} of {candidate}; " + host.detail
                break
        if host is None:
            host = discovery.by_address(address, node)
        if host is None:
            raise PodNotFound(f"no pod with address {address} on {node.label}: not in the endpoint "
                              "records, no netns with it peered into this node, no route to a veth, "
                              "no neighbour/bridge entry", "is the pod on another node? (--node)")
        return Pod(address, node, host)
    pod_netns = _netns_from_query(query)
    if pod_netns:
        host = _by_netns(pod_netns, node, fabric, pod_if, query)
        if host is None:
            raise PodNotFound(f"the {pod_if} of network namespace {pod_netns} is not a veth into "
                              f"{node.label}", "is it on another node? (--node)")
        return Pod(query, node, host)
    name, _ = split_pod_name(query, namespace)
    where = NodeLayout(node.state_dir).endpoints_file
    netns_tried = query if query.startswith("/") else nsutil.netns_path(name)
    raise PodNotFound(
        f"unknown pod {query!r}: no such pod name, address or container ID in {where} "
        f"({n_records} endpoint{'s' if n_records != 1 else ''}) and no network namespace "
        f"{netns_tried}",
        "for pods of other CNIs give the pod's address or its netns (/run/netns/NAME)")


def _by_netns(pod_netns: str, node: Node, fabric: Fabric | None, pod_if: str, query: str,
              by_address: bool = True) -> HostSide | None:
    pod = discovery.read_pod_link(pod_netns, node, pod_if)
    host = discovery.by_peer_link(pod, node)
    if host is not None:
        return host
    if fabric is not None and pod.peer_netnsid is not None:
        from . import netlink

        with netlink.route_socket(pod_netns) as ipr:
            for other in fabric.nodes:
                if other.name != node.name and netlink.netnsid_of(ipr, other.netns) == pod.peer_netnsid:
                    raise PodOnAnotherNode(query, other.name, node.label)
    for address in pod.ips if by_address else ():
        host = discovery.by_address(address, node)
        if host is not None:
            host.pod_netns, host.pod_if, host.mac = pod_netns, pod_if, pod.mac
            return host
    return None
