"""Removing vnet-cni from a node: its conflist, its executables and, when asked, its state.

The conflist goes first (the runtime stops sending new pods to vnet), then the executables, then
the state directory. State is only removed while no vnetd serves it: a running agent would
recreate it, and its endpoints are what `vnetctl gc` and a restarted vnetd use to clean up."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..plugins.front import PLUGINS
from ..node.layout import (DAEMON_STATS_FILE, ENDPOINTS_FILE, IN_PROCESS_LOG, IPAM_FILE, LOCK_DIR, PENDING_DELETES_DIR,
                           SOCKET_NAME, NodeLayout)
from .conflist import is_ours

FALLBACK_DIR = ".vnet-cni"  # the Python entries `vnetctl install` writes next to the front doors
# what vnet-cni keeps in a state directory (node/layout.py): its documents (and their locks, temp
# files and corrupt copies set aside), vnetd's socket, its directories; nothing else is ours to delete
STATE_PREFIXES = tuple(p for n in (IPAM_FILE, ENDPOINTS_FILE, SOCKET_NAME, DAEMON_STATS_FILE, IN_PROCESS_LOG)
                       for p in (n, "." + n))
STATE_DIRS = (LOCK_DIR, PENDING_DELETES_DIR)


class UninstallError(RuntimeError):
    pass


@dataclass
class Removed:
    paths: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # (path: why) lines
    endpoints_left: int = 0
    pending_deletes_left: int = 0


def _remove(path: Path, done: Removed) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    done.paths.append(str(path))


def uninstall(bin_dir: str, conf_dir: str, conflist_name: str = "", state_dir: str = "",
              remove_state: bool = False, prefix: str = "") -> Removed:
    done = Removed()
    cdir = Path(conf_dir)
    if cdir.is_dir():
        names = [conflist_name] if conflist_name else sorted(os.listdir(cdir))
        for name in names:
            path = cdir / name
            if not path.is_file() or not name.endswith((".conflist", ".conf", ".json")):
                continue
            if is_ours(path):
                _remove(path, done)
            elif conflist_name:
                done.kept.append(f"{path}: not a vnet conflist")
    bdir = Path(bin_dir)
    for name in (*PLUGINS, FALLBACK_DIR):
        path = bdir / name
        if path.exists() or path.is_symlink():
            _remove(path, done)
    if prefix:
        _remove_releases(Path(prefix), done)
    if remove_state:
        _remove_state(Path(state_dir), done)
    return done


def _remove_releases(prefix: Path, done: Removed) -> None:
    """The code `vnetctl install` copied into <prefix>/releases/<hash>/ (only that: a prefix holding
    anything else, such as the image's own /opt/vnet-cni, keeps it)."""
    releases = prefix / "releases"
    if not releases.is_dir():
        return
    for release in sorted(releases.iterdir()):
        if (release / "vnetcni" / "__init__.py").is_file() or release.name.startswith("."):
            _remove(release, done)
    if not any(releases.iterdir()):
        _remove(releases, done)
    if prefix.is_dir() and not any(prefix.iterdir()):
        prefix.rmdir()
        done.paths.append(str(prefix))


def _remove_state(sdir: Path, done: Removed) -> None:
    from ..daemon.client import listening

    if not sdir.is_dir():
        return
    sock = NodeLayout(str(sdir)).socket
    if listening(sock):
        raise UninstallError(f"vnetd still serves {sdir} (socket {sock}): stop it (kubectl delete -f "
                             "deploy/, or kill it) before removing its state")
    try:
        from ..plugins.endpoints import EndpointStore

        done.endpoints_left = len(EndpointStore(str(sdir)).all())
    except Exception:  # a corrupt document is removed all the same
        done.endpoints_left = 0
    pending = Path(NodeLayout(str(sdir)).pending_deletes)
    done.pending_deletes_left = len(list(pending.iterdir())) if pending.is_dir() else 0
    for entry in sorted(sdir.iterdir()):
        if entry.name.startswith(STATE_PREFIXES) or entry.name.endswith(".lock") or entry.name in STATE_DIRS:
            _remove(entry, done)
        else:
            done.kept.append(f"{entry}: not vnet-cni state")
    if not any(sdir.iterdir()):
        try:
            sdir.rmdir()
            done.paths.append(str(sdir))
        except OSError as exc:  # e.g. a mount point
            done.kept.append(f"{sdir}: empty, but {exc.strerror}")
