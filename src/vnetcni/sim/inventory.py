"""What a fabric's nodes advertise and hold: capacity from each node's own metadata service (asked
from inside the node, as kubelet's max-pods would be derived there) and the state of each node's
address pool from its IPAM state file."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..dataplane import netns as nsutil
from ..ipam.metadata import MetadataError
from ..ipam.sources import HttpMetadataSource
from ..ipam.store import IpamStore
from ..ipam.view import COOLING, FREE, IN_USE, QUARANTINED, address_rows, node_capacity
from .errors import SimError
from .model import FabricRecord, NodeRecord


@dataclass(frozen=True)
class NodeCapacity:
    node: str
    max_pods: int
    secondary_addresses: int
    primary: str
    mac: str
    source: str

    def to_dict(self) -> dict:
        return {"node": self.node, "maxPods": self.max_pods, "secondaryAddresses": self.secondary_addresses,
                "primary": self.primary, "mac": self.mac, "source": self.source}


def capacity(node: NodeRecord) -> NodeCapacity:
    """max-pods for the node: one pod per secondary address its metadata service lists."""
    source = HttpMetadataSource(node.metadataUrl)
    try:
        with nsutil.entered(node.netns_path):  # the HTTP socket is made inside the node
            cap = node_capacity(source, node.mac)
    except (MetadataError, OSError) as exc:
        raise SimError(f"cannot ask {node.name}'s metadata service: {exc}") from None
    return NodeCapacity(node.name, cap.max_pods, cap.secondary_addresses, cap.pool.primary,
                        cap.pool.mac, cap.source)


def fabric_capacity(fabric: FabricRecord) -> list[NodeCapacity]:
    return [capacity(n) for n in fabric.nodes]


def pool_counts(node: NodeRecord) -> dict[str, int]:
    """{"in use", "free", "cooling", "quarantined", "size"} of the node's pool ("size" 0 until the
    node's IPAM first learned its pool, i.e. before its first pod). Dual-stack: of the IPv4 pool,
    the one that bounds the node's pods (the IPv6 one moves in step with it)."""
    state = IpamStore(node.stateDir).read()
    v6 = state.pool is not None and ":" in state.pool.subnet
    rows = [r for r in address_rows(state, time.time()) if (":" in r.address) == v6]
    counts = {s: sum(1 for r in rows if r.status == s) for s in (IN_USE, FREE, COOLING, QUARANTINED)}
    counts["size"] = len(state.pool.addresses) if state.pool else 0
    return counts
