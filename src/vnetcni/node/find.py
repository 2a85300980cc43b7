"""Which node's state the operator's commands read, found on their own (`vnetctl status`,
`endpoints`, `ipam`, `gc`, `capture`, `trace`).

In this order, the first that answers:
 1. `--state-dir DIR`: that directory.
 2. `--cni-conf-dir DIR` when given: the first network configuration there (in the order runtimes
    read them: file name order, .conf/.conflist/.json) with a `vnet` or `vnet-ipam` plugin.
 3. A simulated node this process runs in (`ip netns exec vsim-demo-node1 vnetctl status`): the
    fabric record naming this network namespace gives the node's conflist.
 4. The default configuration directory /etc/cni/net.d, the same way as 2. (A simulated node has
    its own: /etc/netns/<namespace>/cni/net.d, which `ip netns exec` mounts over /etc/cni.)
 5. A vnetd running in this network namespace: its --state-dir.
Each answer says where it came from (`FoundNode.source`); none is NodeNotFound. The paths inside
the state directory are NodeLayout's. Finding reads files and /proc; it never writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .layout import DEFAULT_STATE_DIR, LayoutError, NodeLayout

DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
CONF_EXTENSIONS = (".conf", ".conflist", ".json")  # what libcni reads


class NodeNotFound(LookupError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class FoundNode:
    layout: NodeLayout
    source: str          # what was read to find it, for the operator
    fabric: str = ""     # a simulated node: its fabric and node names
    node: str = ""

    @property
    def state_dir(self) -> str:
        return self.layout.state_dir

    def describe(self) -> str:
        return f"state {self.state_dir} (from {self.source})"


def _ours(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    plugins = doc.get("plugins") if isinstance(doc.get("plugins"), list) else [doc]
    for conf in plugins:
        if isinstance(conf, dict) and (conf.get("type") in ("vnet", "vnet-ipam") or
                                       (isinstance(conf.get("ipam"), dict) and conf["ipam"].get("type") == "vnet-ipam")):
            return True
    return False


def from_conf_dir(conf_dir: str) -> FoundNode | None:
    """The first vnet configuration in conf_dir (runtimes' order); None when there is none."""
    try:
        names = sorted(n for n in os.listdir(conf_dir) if n.endswith(CONF_EXTENSIONS))
    except OSError:
        return None
    for name in names:
        path = os.path.join(conf_dir, name)
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        if _ours(doc):
            try:
                layout = NodeLayout.from_conflist(doc)
            except LayoutError as exc:
                raise NodeNotFound(f"{path}: {exc}") from None
            first = names.index(name) == 0
            note = "" if first else f"; note: {names[0]} sorts before it, and runtimes use the first"
            return FoundNode(layout, f"conflist {path}{note}")
    return None


def _this_netns() -> tuple[int, int] | None:
    try:
        st = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def from_simulated_node() -> FoundNode | None:
    """The simulated node whose network namespace this process is in (by the fabric records)."""
    here = _this_netns()
    if here is None:
        return None
    from ..sim import model

    for fabric_name in model.list_fabrics():
        try:
            rec = model.load(fabric_name)
        except (LookupError, ValueError, TypeError):
            continue
        for node in rec.nodes:
            try:
                st = os.stat(node.netns_path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != here:
                continue
            found = from_conf_dir(os.path.dirname(node.conflist)) if os.path.exists(node.conflist) else None
            where = f"simulated node {node.name} of fabric {rec.name}"
            if found is not None:
                return FoundNode(found.layout, f"{where}, {found.source}", rec.name, node.name)
            return FoundNode(NodeLayout(node.stateDir), where, rec.name, node.name)
    return None


def from_running_vnetd() -> FoundNode | None:
    """A vnetd in this network namespace: the --state-dir it was started with."""
    here = _this_netns()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != here or not _is_vnetd(argv):
            continue
        state_dir = DEFAULT_STATE_DIR
        for i, arg in enumerate(argv):
            if arg == "--state-dir" and i + 1 < len(argv):
                state_dir = argv[i + 1]
            elif arg.startswith("--state-dir="):
                state_dir = arg.split("=", 1)[1]
        try:
            return FoundNode(NodeLayout(state_dir), f"the running vnetd (pid {pid})")
        except LayoutError:
            continue
    return None


def _is_vnetd(argv: list[str]) -> bool:
    if not argv:
        return False
    if os.path.basename(argv[0]) == "vnetd":
        return True
    # `python .../bin/vnetd ...` or `python -m vnetcni.daemon.main`
    return len(argv) > 1 and os.path.basename(argv[0]).startswith("python") and (
        os.path.basename(argv[1]) == "vnetd" or "vnetcni.daemon.main" in argv[1:3])


def find_node(state_dir: str | None = None, cni_conf_dir: str | None = None) -> FoundNode:
    """This node's layout and where it was found; NodeNotFound when nothing names one."""
    if state_dir:
        try:
            return FoundNode(NodeLayout(os.path.abspath(state_dir)), "--state-dir")
        except LayoutError as exc:
            raise NodeNotFound(f"--state-dir: {exc}") from None
    if cni_conf_dir:
        found = from_conf_dir(cni_conf_dir)
        if found is None:
            raise NodeNotFound(f"no vnet network configuration in {cni_conf_dir}",
                               "install one with `vnetctl install`, or pass --state-dir DIR")
        return found
    for finder in (from_simulated_node, lambda: from_conf_dir(DEFAULT_CNI_CONF_DIR), from_running_vnetd):
        found = finder()
        if found is not None:
            return found
    raise NodeNotFound(f"no vnet node here: no vnet network configuration in {DEFAULT_CNI_CONF_DIR}, "
                       "no vnetd running in this network namespace",
                       "pass --state-dir DIR or --cni-conf-dir DIR (or `vnetctl install` first)")
