"""Which node a capture runs on: this host, or a node namespace of the simulated VNet.

The simulated VNet (`vnetctl fabric up --fabric NAME`) describes itself in
/run/vnet-sim/<name>/fabric.json; each node there has its namespace, its stateDir, its bridge and
its uplink (`eth0`). `--fabric` takes a fabric name or the path of a fabric.json (tests build
hand-made fabrics that way without touching the shared /run/vnet-sim).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..dataplane import netns as nsutil
from ..node.layout import DEFAULT_STATE_DIR
from ..sim.model import FABRIC_FILE, list_fabrics
from ..sim.naming import NODE_BRIDGE, check_fabric_name, root_dir
from .errors import BadInput, PodNotFound


def netns_path(name_or_path: str | None) -> str | None:
    """A namespace path as given, or the path of a named one (/run/netns/NAME); None for none."""
    if not name_or_path:
        return None
    return name_or_path if name_or_path.startswith("/") else nsutil.netns_path(name_or_path)


@dataclass(frozen=True)
class Node:
    """A place pods live: its network namespace (None: this process's own), state and links."""

    name: str
    netns: str | None
    state_dir: str
    bridge: str = NODE_BRIDGE
    uplink: str | None = None
    primary: str | None = None
    fabric_port: str | None = None

    @property
    def label(self) -> str:
        return self.name


@dataclass
class Fabric:
    name: str
    path: str
    netns: str | None
    bridge: str | None
    nodes: list[Node] = field(default_factory=list)
    gateway: str | None = None

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise PodNotFound(f"fabric {self.name} has no node {name!r}",
                          f"its nodes: {', '.join(n.name for n in self.nodes) or 'none'}")


def this_host(state_dir: str | None) -> Node:
    return Node(name="this host", netns=None, state_dir=state_dir or DEFAULT_STATE_DIR)


def load_fabric(name_or_path: str | None) -> Fabric:
    """The named fabric, the one at a path, or (no name) the only one there is."""
    if name_or_path and ("/" in name_or_path or name_or_path.endswith(".json")):
        path = name_or_path
        if os.path.isdir(path):
            path = os.path.join(path, FABRIC_FILE)
    else:
        names = list_fabrics()
        if not name_or_path:
            if not names:
                raise BadInput(f"no simulated VNet is running (no {FABRIC_FILE} under "
                               f"{root_dir()})", "start one with `vnetctl fabric up --fabric NAME`")
            if len(names) > 1:
                raise BadInput(f"several simulated VNets are running ({', '.join(names)})",
                               "pick one with --fabric NAME")
            name_or_path = names[0]
        try:
            check_fabric_name(name_or_path)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        path = os.path.join(root_dir(), name_or_path, FABRIC_FILE)
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise PodNotFound(f"no simulated VNet {name_or_path!r} ({path} does not exist)",
                          f"running: {', '.join(list_fabrics()) or 'none'}") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None
    return parse_fabric(raw, path)


def parse_fabric(raw: dict, path: str) -> Fabric:
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list):
        raise BadInput(f"{path} is not a fabric description (no node list)")
    nodes = []
    for n in raw["nodes"]:
        if not isinstance(n, dict) or not n.get("name") or not n.get("netns"):
            raise BadInput(f"{path}: a node without name or netns")
        nodes.append(Node(
            name=str(n["name"]),
            netns=netns_path(str(n["netns"])),
            state_dir=str(n.get("stateDir") or DEFAULT_STATE_DIR),
            bridge=str(n.get("bridge", NODE_BRIDGE) or ""),  # "": a transparent-mode node
            uplink=_uplink_name(n.get("eth0")),
            primary=_address(n.get("primary")),
            fabric_port=n.get("fabricPort") if isinstance(n.get("fabricPort"), str) else None,
        ))
    return Fabric(name=str(raw.get("name") or os.path.basename(os.path.dirname(path))), path=path,
                  netns=netns_path(raw.get("fabricNetns")), bridge=raw.get("fabricBridge") or None,
                  nodes=nodes, gateway=_address(raw.get("gateway")))


def _uplink_name(value) -> str | None:
    """The node's uplink: a name ("eth0"), or an object carrying one."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("name") or value.get("ifName")
    return "eth0"


def _address(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("ip") or value.get("address")
    return str(value).split("/")[0] if value else None
