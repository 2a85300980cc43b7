"""The conflist on a node, written by vnetd only once it serves requests.

kubelet reports the node NetworkReady (and schedules pods onto it) as soon as a conflist appears
in the CNI conf directory. vnetd therefore installs it last: after its socket answers a real
request (a VERSION round trip through the worker pool) and after the node's address pool is known
(learned from the metadata source now, or kept in the state directory from before), so the first
pod that kubelet sends can really get an address. The file is placed atomically (temp + rename)
and left untouched when it already holds the same bytes.

On SIGTERM vnetd leaves the conflist in place: a restart or a rolling upgrade must neither flip
the node NotReady nor block pod deletion (while no vnetd answers, the front doors fail ADD with
code 11 so the runtime retries, and DEL as documented in the front door). Only `vnetctl
uninstall` removes it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from ..cni.config import parse_conflist
from ..cni.errors import CNIError
from ..node.layout import LayoutError, NodeLayout
from .files import place, require_dir

log = logging.getLogger("vnetd")
DEFAULT_NAME = "10-vnet.conflist"
OUR_TYPES = ("vnet", "vnet-ipam")


class ConflistError(ValueError):
    pass


def _ipam_sections(plugins: tuple[dict, ...]) -> list[tuple[dict, dict]]:
    """(ipam section, its plugin) for every vnet-ipam in the list (inside vnet or any main plugin)."""
    found = []
    for plugin in plugins:
        ipam = plugin.get("ipam")
        if plugin.get("type") == "vnet-ipam":
            found.append((plugin, plugin))
        elif isinstance(ipam, dict) and ipam.get("type") == "vnet-ipam":
            found.append((ipam, plugin))
    return found


def load(path: str, state_dir: str) -> tuple[bytes, list]:
    """Read and check the conflist to install: (the bytes to write, the vnet-ipam configurations).

    Its plugins must find this vnetd: every vnet / vnet-ipam entry's stateDir (default
    /var/run/vnet) must be vnetd's own, or every call would miss the daemon."""
    from ..ipam.config import IpamConfig

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConflistError(f"cannot read the conflist {path}: {exc.strerror or exc}") from None
    try:
        conf = parse_conflist(raw)
    except CNIError as exc:
        raise ConflistError(f"{path} is not a valid conflist: {exc.msg}") from None
    want = NodeLayout(state_dir).socket
    ours = [p for p in conf.plugins if p.get("type") in OUR_TYPES]
    ipams = _ipam_sections(conf.plugins)
    if not ours and not ipams:
        raise ConflistError(f"{path} has neither a vnet nor a vnet-ipam plugin")
    for index, plugin in enumerate(conf.plugins):
        if plugin.get("type") == "vnet":  # the plugin's own validation, as on every call
            from ..cni.config import parse_netconf
            from ..plugins.vnet import Settings

            try:
                Settings(parse_netconf(conf.plugin_config(index)))
            except CNIError as exc:
                raise ConflistError(f"{path}: bad vnet section: {exc.msg}") from None
    for plugin in ours:
        try:
            got = NodeLayout.for_plugin(plugin["type"], plugin).socket
        except LayoutError as exc:
            raise ConflistError(f"{path}: {exc}") from None
        if got != want:
            raise ConflistError(f"{path}: the {plugin.get('type')} plugin's stateDir points at {got}, "
                                f"but this vnetd serves {want} (set stateDir to {state_dir})")
    configs = []
    for section, plugin in ipams:
        try:
            cfg = IpamConfig.from_sections(section, {**plugin, "cniVersion": conf.cni_version})
        except CNIError as exc:
            raise ConflistError(f"{path}: bad vnet-ipam section: {exc.msg}") from None
        if NodeLayout(cfg.state_dir) != NodeLayout(state_dir):
            raise ConflistError(f"{path}: vnet-ipam's stateDir is {cfg.state_dir}, but this vnetd "
                                f"serves {state_dir}")
        configs.append(cfg)
    data = (json.dumps(json.loads(raw), indent=2) + "\n").encode()
    return data, configs


def write(conf_dir: str, name: str, data: bytes) -> str:
    """Place the conflist atomically; returns installed / updated / unchanged."""
    require_dir(Path(conf_dir), False, "CNI conf directory")
    return place(Path(conf_dir) / name, data, 0o644)


def shadowed_by(conf_dir: str, name: str) -> str:
    """The file a runtime would pick instead of ours: like libcni, the first .conf, .conflist or
    .json in name order ('' when ours comes first)."""
    try:
        names = sorted(n for n in os.listdir(conf_dir) if n.endswith((".conf", ".conflist", ".json")))
    except OSError:
        return ""
    return names[0] if names and names[0] != name else ""


def is_ours(path: Path) -> bool:
    """True if the file is a conflist whose plugins include vnet or vnet-ipam."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    plugins = doc.get("plugins") if isinstance(doc, dict) else None
    if not isinstance(plugins, list):
        return False
    return any(isinstance(p, dict) and (p.get("type") in OUR_TYPES or
                                        (isinstance(p.get("ipam"), dict) and p["ipam"].get("type") in OUR_TYPES))
               for p in plugins)


class ConflistInstaller:
    """vnetd's background step: probe its own socket, wait for the pool, then write the conflist."""

    PROBE_TIMEOUT = 5.0
    LOG_EVERY = 15.0

    def __init__(self, source: str, conf_dir: str, name: str, state_dir: str, refresher) -> None:
        self.conf_dir, self.name, self.state_dir = conf_dir, name or DEFAULT_NAME, state_dir
        self.data, self.configs = load(source, state_dir)
        require_dir(Path(conf_dir), False, "CNI conf directory")
        self._refresher = refresher
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()
        self.error = ""

    def start(self) -> None:
        for cfg in self.configs:
            self._refresher.observe(cfg)  # learn the pool now, not on the first ADD
        self._thread = threading.Thread(target=self._run, name="conflist-installer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _pool_missing(self) -> list[str]:
        from ..ipam.store import IpamStore

        missing = []
        for cfg in self.configs:
            try:
                state = IpamStore(cfg.state_dir).read()
            except CNIError as exc:
                missing.append(f"{cfg.source_description}: {exc.msg}")
                continue
            if state.pool is None:
                why = state.refresh.last_error or "no answer yet"
                missing.append(f"{cfg.source_description}: {why}")
        return missing

    def _run(self) -> None:
        from .probe import ProbeError, ask_version

        sock = NodeLayout(self.state_dir).socket
        try:
            ask_version(sock, self.PROBE_TIMEOUT)
        except ProbeError as exc:
            self.error = f"not installing the conflist: vnetd does not answer itself: {exc}"
            log.error("%s", self.error)
            return
        last_log = 0.0
        while not self._stop.is_set():
            missing = self._pool_missing()
            if not missing:
                break
            if time.monotonic() - last_log >= self.LOG_EVERY:
                last_log = time.monotonic()
                log.warning("waiting for the node's address pool before installing the conflist "
                            "(the node stays NotReady): %s", "; ".join(missing))
            self._stop.wait(0.5)
        if self._stop.is_set():
            return
        path = os.path.join(self.conf_dir, self.name)
        try:
            outcome = write(self.conf_dir, self.name, self.data)
        except OSError as exc:
            self.error = f"cannot write {path}: {exc.strerror or exc}"
            log.error("%s", self.error)
            return
        log.info("conflist %s: %s (vnetd serves requests; the node can turn Ready)", path, outcome)
        other = shadowed_by(self.conf_dir, self.name)
        if other:
            log.warning("%s sorts before %s in %s: the runtime uses that network, not vnet (remove it, "
                        "or give --conflist-name a name that sorts first)", other, self.name, self.conf_dir)
        self.done.set()
