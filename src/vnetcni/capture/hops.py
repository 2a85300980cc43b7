"""Which interfaces a flow from a pod crosses, in order: the path a trace listens on.

pod veth → bridge → node uplink → (fabric ports) → peer node uplink → bridge → peer pod veth.
The destination is looked up in every node's endpoint records of the simulated VNet (or is a
node's own address); outside a fabric only this node's hops are known.
"""

from __future__ import annotations

from dataclasses import dataclass

from .endpoints import load_records, match_records, single_record
from .nodes import Fabric, Node
from .resolve import Pod, from_record


@dataclass(frozen=True)
class Hop:
    node: str
    netns: str | None
    interface: str
    role: str            # "pod veth", "bridge", "uplink", "fabric port", "pod eth0"

    @property
    def label(self) -> str:
        return f"{self.node}:{self.interface}"


@dataclass
class Destination:
    address: str
    port: int | None
    pod: Pod | None = None      # a pod of the simulated VNet
    node: Node | None = None    # the node that owns the address (pod's node, or a node's primary)

    @property
    def description(self) -> str:
        target = f"{self.address}:{self.port}" if self.port else self.address
        if self.pod is not None:
            return f"{target} (pod {self.pod.name} on {self.pod.node.name})"
        if self.node is not None:
            return f"{target} (node {self.node.name})"
        return target


def find_destination(address: str, port: int | None, fabric: Fabric | None) -> Destination:
    dest = Destination(address, port)
    if fabric is None:
        return dest
    for node in fabric.nodes:
        found = match_records(load_records(node.state_dir), address, None)
        if found:
            dest.pod = from_record(single_record(found, address), node)
            dest.node = node
            return dest
    for node in fabric.nodes:
        if node.primary == address:
            dest.node = node
            return dest
    return dest


def _node_side(node: Node, pod: Pod | None, fabric: Fabric | None) -> list[Hop]:
    """A node's hops from its pod outwards: veth, bridge, uplink (and its fabric port)."""
    hops = []
    if pod is not None:
        hops.append(Hop(node.name, node.netns, pod.host.host_if, "pod veth"))
    bridge = pod.host.bridge if pod is not None else node.bridge
    if bridge:
        hops.append(Hop(node.name, node.netns, bridge, "bridge"))
    if fabric is not None and node.uplink:
        hops.append(Hop(node.name, node.netns, node.uplink, "uplink"))
        if fabric.netns and node.fabric_port:
            hops.append(Hop(fabric.name, fabric.netns, node.fabric_port, "fabric port"))
    return hops


def plan(source: Pod, dest: Destination, fabric: Fabric | None) -> list[Hop]:
    """The hops in the forward direction; a reply crosses them in reverse."""
    src_node = source.node
    if dest.node is not None and dest.node.name == src_node.name:
        # Node-local: the source's veth and bridge, then the destination pod's veth (no uplink).
        hops = _node_side(src_node, source, None)
        if dest.pod is not None:
            hops.append(_node_side(src_node, dest.pod, None)[0])
        return hops
    hops = _node_side(src_node, source, fabric)
    if dest.node is not None:
        hops += list(reversed(_node_side(dest.node, dest.pod, fabric)))
    elif fabric is not None and fabric.netns and fabric.bridge and dest.address == fabric.gateway:
        hops.append(Hop(fabric.name, fabric.netns, fabric.bridge, "VNet gateway"))
    return hops
