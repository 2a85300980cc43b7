"""Is a simulated node whole? Judged by what answers, not by recorded pids: the node's namespace
exists, its metadata service answers its HTTP request from inside the node, and (when the fabric
runs vnetd) vnetd accepts connections on its socket. Each check says why it failed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..daemon.client import listening
from ..node.layout import NodeLayout
from . import kernel
from .model import FabricRecord, NodeRecord


@dataclass
class Check:
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return {"ok": self.ok, "detail": self.detail}


@dataclass
class NodeHealth:
    node: str
    netns: Check
    metadata: Check
    vnetd: Check | None          # None: this fabric runs no vnetd
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"node": self.node, "ok": self.ok, "problems": self.problems, "netns": self.netns.to_dict(),
                "metadata": self.metadata.to_dict(), "vnetd": self.vnetd.to_dict() if self.vnetd else None}


def vnetd_socket(node: NodeRecord) -> str:
    return NodeLayout(node.stateDir).socket


def runs_vnetd(rec: FabricRecord, node: NodeRecord) -> bool:
    return bool(getattr(rec, "vnetd", False) or node.vnetdPid)


def check_metadata(node: NodeRecord, timeout: float = 1.0) -> Check:
    from ..ipam.metadata import MetadataError
    from .services import fetch_metadata

    try:
        body = fetch_metadata(node.netns, node.metadataUrl, timeout)
    except (MetadataError, OSError) as exc:
        return Check(False, f"metadata service not answering at {node.metadataUrl} inside {node.netns}: {exc}")
    want = node.mac.replace(":", "").upper().encode()
    if want not in body.upper():
        return Check(False, f"metadata service at {node.metadataUrl} answers without this node's NIC {node.mac}")
    return Check(True, f"answering at {node.metadataUrl}")


def check_vnetd(node: NodeRecord) -> Check:
    sock = vnetd_socket(node)
    if listening(sock):
        return Check(True, f"listening on {sock}")
    why = "socket file left behind, nobody accepts on it" if os.path.exists(sock) else "no socket"
    return Check(False, f"vnetd not listening on {sock} ({why})")


def node_health(rec: FabricRecord, node: NodeRecord) -> NodeHealth:
    if not kernel.netns_exists(node.netns):
        gone = Check(False, f"namespace {node.netns} is gone")
        return NodeHealth(node.name, gone, Check(False, "node namespace gone"),
                          Check(False, "node namespace gone") if runs_vnetd(rec, node) else None,
                          [gone.detail])
    h = NodeHealth(node.name, Check(True, node.netns), check_metadata(node),
                   check_vnetd(node) if runs_vnetd(rec, node) else None)
    for c in (h.metadata, h.vnetd):
        if c is not None and not c.ok:
            h.problems.append(c.detail)
    return h


def fabric_health(rec: FabricRecord) -> tuple[list[str], list[NodeHealth]]:
    """(fabric-level problems, per-node health)."""
    problems = []
    if not rec.complete:
        problems.append("its `fabric up` did not finish")
    if not kernel.netns_exists(rec.fabricNetns):
        problems.append(f"fabric namespace {rec.fabricNetns} is gone")
    return problems, [node_health(rec, n) for n in rec.nodes]


def is_whole(rec: FabricRecord) -> bool:
    problems, nodes = fabric_health(rec)
    return not problems and all(n.ok for n in nodes)
