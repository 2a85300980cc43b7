"""Which node to look on, and the pod there: --node/--fabric pick a node of the simulated VNet,
otherwise this host with --state-dir (default /var/run/vnet), and failing that the one node of a
running simulated VNet whose records name the pod (said on stderr)."""

from __future__ import annotations

import dataclasses

from .endpoints import load_records, match_records
from .errors import BadInput, CaptureError, PodNotFound
from ..sim.model import list_fabrics
from .nodes import Fabric, Node, load_fabric, this_host
from .resolve import Pod, locate, resolve


def find_pod(query: str, namespace: str | None = None, node_name: str | None = None,
             fabric_name: str | None = None, state_dir: str | None = None) -> tuple[Pod, Fabric | None]:
    if node_name or fabric_name:
        fabric = load_fabric(fabric_name)
        if node_name:
            node = fabric.node(node_name)
            if state_dir:
                node = dataclasses.replace(node, state_dir=state_dir)
            return resolve(query, namespace, node, fabric), fabric
        try:
            return resolve(query, namespace, locate(query, namespace, fabric), fabric), fabric
        except PodNotFound:
            for node in fabric.nodes:  # a pod of another CNI: try discovery node by node
                try:
                    return resolve(query, namespace, node, None), fabric
                except PodNotFound:
                    continue
            raise
    try:
        return resolve(query, namespace, this_host(state_dir)), None
    except PodNotFound:
        found = _in_running_fabrics(query, namespace)
        if not found:
            raise
    if len(found) > 1:
        raise BadInput(f"{query!r} is ambiguous: it is not on this host but matches pods on several "
                       "simulated nodes: " + ", ".join(f"{f.name}/{n.name}" for f, n in found),
                       "pick one with --fabric NAME --node NODE")
    fabric, node = found[0]
    pod = resolve(query, namespace, node, fabric)
    pod.notes.append(f"not on this host: found on node {node.name} of the simulated VNet "
                     f"{fabric.name}")
    return pod, fabric


def _in_running_fabrics(query: str, namespace: str | None) -> list[tuple[Fabric, Node]]:
    """The (fabric, node) pairs of running simulated VNets whose records name this pod."""
    found = []
    for name in list_fabrics():
        try:
            fabric = load_fabric(name)
            found += [(fabric, node) for node in fabric.nodes
                      if match_records(load_records(node.state_dir), query, namespace)]
        except CaptureError:
            continue
    return found
