"""The node's layout: where one node keeps its state, decided here and asked everywhere else.

    layout = NodeLayout.for_plugin("vnet", netconf)   # a plugin call's configuration (a dict)
    layout = NodeLayout.from_conflist(conflist)        # an installed conflist (a dict)
    layout = NodeLayout("/var/run/vnet")               # an explicit --state-dir
    layout.socket, layout.ipam_file, layout.endpoints_file, layout.lock_dir, layout.pending_deletes
    layout.vnetd_timeout                               # seconds a front door waits on vnetd

Everything lives under one state directory (default DEFAULT_STATE_DIR):

    <state_dir>/vnetd.sock           vnetd's socket (root only)
    <state_dir>/ipam.json            vnet-ipam's pool and allocations (+ ipam.json.lock)
    <state_dir>/endpoints.json       the vnet plugin's endpoint records (+ endpoints.json.lock)
                                     (both journals: state/journal.py)
    <state_dir>/vnetd-stats.json     vnetd's counters since its start (calls failed by deadline)
    <state_dir>/in-process-calls     one byte per call a fallback front door ran in-process (vnetd
                                     unreachable, or it handed the call back); vnetd exposes the size
    <state_dir>/locks/               short-lived lock files (bridge set-up, attachments)
    <state_dir>/pending-deletes/     DELs recorded by a no-fallback front door while vnetd was
                                     down; vnetd carries them out before it serves anything

The rule that finds the state directory in a network configuration (the C front door follows the
same rule, with DEFAULT_STATE_DIR compiled in by `vnetctl install`; tests/unit/test_node_layout.py
checks they agree): the plugin's own section's `stateDir`, else the other section's, else the
default. For `vnet` its own section is the top level and the other is `ipam`; for `vnet-ipam` its
own is `ipam` and the other the top level. A `stateDir` of JSON null counts as absent; any other
value must be an absolute path (normalised like os.path.normpath), else LayoutError.

`vnetdTimeoutSeconds` (same rule, default DEFAULT_VNETD_TIMEOUT) is how long a front door waits on
vnetd, connecting and answering included, before it answers CNI error 11 naming vnetd and its
socket: a number in (0, MAX_VNETD_TIMEOUT], kept well under the runtime's own CNI timeout.

Building a layout reads nothing and creates nothing; `ensure()` creates the directories.
"""

from __future__ import annotations

import os

from ..cni._record import FrozenRecord
from ..cni import fastjson as json  # json without `re` (plugin start-up)

DEFAULT_STATE_DIR = "/var/run/vnet"
SOCKET_NAME = "vnetd.sock"
IPAM_FILE = "ipam.json"
ENDPOINTS_FILE = "endpoints.json"
DAEMON_STATS_FILE = "vnetd-stats.json"
LOCK_DIR = "locks"
PENDING_DELETES_DIR = "pending-deletes"
IN_PROCESS_LOG = "in-process-calls"
DEFAULT_VNETD_TIMEOUT = 5.0
MAX_VNETD_TIMEOUT = 60.0
MAX_STATE_DIR = 4000  # bytes (the C front door's buffer); the socket path must also fit sun_path (108)


class LayoutError(ValueError):
    """The configuration names no usable state directory (the plugins answer INVALID_CONFIG)."""


class NodeLayout(FrozenRecord):
    """A record, not a dataclass: every plugin call builds one (dataclasses costs ~20 ms of
    imports to a plugin started without vnetd)."""

    __slots__ = ("state_dir", "vnetd_timeout")
    state_dir: str
    vnetd_timeout: float

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR, vnetd_timeout: float = DEFAULT_VNETD_TIMEOUT) -> None:
        self._set(state_dir=state_dir, vnetd_timeout=vnetd_timeout)
        t = self.vnetd_timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= MAX_VNETD_TIMEOUT:
            raise LayoutError(f"vnetdTimeoutSeconds must be a number of seconds in (0, {MAX_VNETD_TIMEOUT:g}], "
                              f"got {t!r}")
        if not isinstance(self.state_dir, str) or not os.path.isabs(self.state_dir):
            raise LayoutError(f"stateDir must be an absolute path, got {self.state_dir!r}")
        try:
            size = len(self.state_dir.encode())
        except UnicodeEncodeError:
            size = -1
        if "\0" in self.state_dir or not 0 < size <= MAX_STATE_DIR:
            raise LayoutError(f"stateDir is not a usable path: {self.state_dir[:80]!r}")
        self._set(state_dir=os.path.normpath(self.state_dir))

    # --- finding the layout ----------------------------------------------------------------
    @classmethod
    def for_plugin(cls, plugin: str, netconf: object) -> "NodeLayout":
        """The layout a call of `plugin` ("vnet" or "vnet-ipam") with this configuration uses."""
        if not isinstance(netconf, dict):
            raise LayoutError("the network configuration must be a JSON object")
        ipam = netconf.get("ipam")
        ipam = ipam if isinstance(ipam, dict) else {}
        sections = [("ipam.", ipam), ("", netconf)]
        if plugin != "vnet-ipam":
            sections.reverse()

        def find(key: str):
            for where, section in sections:
                value = section.get(key)
                if value is not None:
                    return where + key, value
            return key, None

        where, state_dir = find("stateDir")
        if state_dir is not None and (not isinstance(state_dir, str) or not os.path.isabs(state_dir)):
            raise LayoutError(f"{where} must be an absolute path, got {state_dir!r}")
        _, timeout = find("vnetdTimeoutSeconds")
        return cls(state_dir if state_dir is not None else DEFAULT_STATE_DIR,
                   timeout if timeout is not None else DEFAULT_VNETD_TIMEOUT)

    @classmethod
    def from_conflist(cls, conflist: dict) -> "NodeLayout":
        """The layout of the first `vnet` (or `vnet-ipam`) plugin in a conflist (or a single
        network configuration); the default when it has none."""
        plugins = conflist.get("plugins") if isinstance(conflist.get("plugins"), list) else [conflist]
        for conf in plugins:
            if isinstance(conf, dict) and conf.get("type") == "vnet":
                return cls.for_plugin("vnet", conf)
        for conf in plugins:
            if isinstance(conf, dict) and isinstance(conf.get("ipam"), dict) \
                    and conf["ipam"].get("type") == "vnet-ipam":
                return cls.for_plugin("vnet-ipam", conf)
        return cls()

    @classmethod
    def from_conflist_file(cls, path: str) -> "NodeLayout":
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            raise LayoutError(f"cannot read the network configuration {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise LayoutError(f"{path} is not a network configuration")
        return cls.from_conflist(doc)

    # --- what the node keeps -----------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    @property
    def socket(self) -> str:
        return self._path(SOCKET_NAME)

    @property
    def ipam_file(self) -> str:
        return self._path(IPAM_FILE)

    @property
    def endpoints_file(self) -> str:
        return self._path(ENDPOINTS_FILE)

    @property
    def daemon_stats(self) -> str:
        """vnetd's counters since its start (calls failed by deadline), for `vnetctl status`."""
        return self._path(DAEMON_STATS_FILE)

    @property
    def lock_dir(self) -> str:
        return self._path(LOCK_DIR)

    @property
    def pending_deletes(self) -> str:
        return self._path(PENDING_DELETES_DIR)

    @property
    def in_process_log(self) -> str:
        """Grows by one byte per call a fallback front door ran in-process; never truncated, so
        its size is a counter (vnet_in_process_calls_total)."""
        return self._path(IN_PROCESS_LOG)

    def ensure(self) -> "NodeLayout":
        """Create the state, lock and pending-deletes directories (for writers only)."""
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        for d in (self.lock_dir, self.pending_deletes):
            os.makedirs(d, mode=0o700, exist_ok=True)
        return self
