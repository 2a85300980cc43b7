"""fabric.json: the record of one simulated fabric (read by `vnetctl trace` and the tests too).

Format (keys are the contract with other tools; extra keys may be added, none removed):
{"name", "subnet", "gateway", "fabricNetns", "fabricBridge", "ipsPerNode", "enforceSource",
 "mode" ("bridge" | "transparent"), "vnetd", "metricsPort", "complete", "created",
 "nodes": [{"name", "netns", "primary", "mac", "eth0", "fabricPort", "bridge", "stateDir",
            "conflist", "cniBinDir", "metadataUrl", "metadataFile", "metadataPid",
            "secondaries": [...], "vnetdPid"}]}
A transparent-mode node has no bridge: its "bridge" is "".
Dual-stack fabrics add "subnet6", "gateway6" and per node "primary6", "secondaries6" ("" and []
on a single-stack fabric).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from ..dataplane.netns import netns_path
from ..state.durable import atomic_write
from . import naming

FABRIC_FILE = "fabric.json"


@dataclass
class NodeRecord:
    name: str
    netns: str
    primary: str
    mac: str
    fabricPort: str
    stateDir: str
    conflist: str
    cniBinDir: str
    metadataUrl: str
    metadataFile: str
    secondaries: list[str]
    eth0: str = naming.NODE_UPLINK
    bridge: str = naming.NODE_BRIDGE
    metadataPid: int | None = None
    vnetdPid: int | None = None
    primary6: str = ""
    secondaries6: list[str] = field(default_factory=list)

    @property
    def netns_path(self) -> str:
        return netns_path(self.netns)


@dataclass
class FabricRecord:
    name: str
    subnet: str
    gateway: str
    fabricNetns: str
    fabricBridge: str
    ipsPerNode: int
    enforceSource: bool = False
    mode: str = "bridge"
    vnetd: bool = False                 # the nodes run vnetd
    metricsPort: int | None = None      # vnetd's metrics port on every node (fabric up --metrics)
    subnet6: str = ""
    gateway6: str = ""
    complete: bool = False
    created: str = ""
    nodes: list[NodeRecord] = field(default_factory=list)

    @property
    def directory(self) -> str:
        return naming.fabric_dir(self.name)

    def node(self, name: str) -> NodeRecord:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes) or "none"
        raise LookupError(f"fabric {self.name!r} has no node {name!r} (nodes: {known})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FabricRecord":
        node_keys = NodeRecord.__dataclass_fields__.keys()
        nodes = [NodeRecord(**{k: v for k, v in n.items() if k in node_keys}) for n in d.get("nodes", [])]
        keys = cls.__dataclass_fields__.keys()
        rest = {k: v for k, v in d.items() if k in keys and k != "nodes"}
        return cls(nodes=nodes, **rest)


def fabric_file(name: str) -> str:
    return os.path.join(naming.fabric_dir(name), FABRIC_FILE)


def save(record: FabricRecord) -> None:
    os.makedirs(record.directory, mode=0o755, exist_ok=True)
    data = (json.dumps(record.to_dict(), indent=2) + "\n").encode()
    atomic_write(fabric_file(record.name), data, mode=0o644)


def load(name: str) -> FabricRecord:
    """The fabric's record; LookupError when it is not up (or its record is unreadable)."""
    naming.check_fabric_name(name)
    path = fabric_file(name)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        running = ", ".join(list_fabrics()) or "none"
        raise LookupError(f"fabric {name!r} is not up (no {path}; running: {running}); "
                          f"start it with `vnetctl fabric up --fabric {name}`") from None
    except (OSError, ValueError) as exc:
        raise LookupError(f"fabric {name!r} has an unreadable record {path}: {exc}") from None
    return FabricRecord.from_dict(data)


def list_fabrics() -> list[str]:
    try:
        entries = sorted(os.listdir(naming.root_dir()))
    except OSError:  # none yet, or unreadable: no fabric to name
        return []
    return [e for e in entries if os.path.isfile(os.path.join(naming.root_dir(), e, FABRIC_FILE))]
