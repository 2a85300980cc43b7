"""DELs a no-fallback front door recorded while vnetd did not answer, carried out by vnetd.

Why: on a node whose host has no Python (the image's install-cni), a DEL that cannot reach vnetd
must neither block the pod's removal forever nor leak its address. The C front door writes the
request (wire format, no descriptor) to `<stateDir>/pending-deletes/<key>.del` (written, fsynced,
renamed into place) and answers success; the pod's veth dies with its namespace, and vnetd
releases the address and drops the record:
- at start, before it listens (Server.start);
- before it serves any call of the same attachment (an ADD after that DEL must not be undone
  by a late replay; a pending DEL that fails then fails the call with code 11);
- every RETRY_SECONDS, for the rest (a vnetd that was stopped, not restarted).
A replayed DEL that fails stays for the next round; one that cannot be decoded is moved aside to
`<key>.del.bad` for the operator, never deleted.

The key names the attachment: FNV-1a 64 over plugin, network name, container ID and ifname, each
followed by a NUL (the front door computes the same; tests/unit/test_vnetd_protocol.py checks it).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Callable

from ..node.layout import MAX_STATE_DIR, NodeLayout
from . import protocol

log = logging.getLogger("vnetd")
RETRY_SECONDS = 10.0
SUFFIX = ".del"


def attachment_key(plugin: str, network: object, container_id: str, ifname: str) -> str:
    name = network if isinstance(network, str) else ""
    try:
        raw_name = name.encode()
    except UnicodeEncodeError:
        raw_name = b""
    if len(raw_name) > MAX_STATE_DIR or b"\0" in raw_name:
        raw_name = b""
    h = 0xCBF29CE484222325
    for part in (plugin.encode(), raw_name, container_id.encode(errors="surrogateescape"),
                 ifname.encode(errors="surrogateescape")):
        for byte in part + b"\0":
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def count(layout: NodeLayout) -> int:
    """How many DELs wait in the node's pending-deletes directory (reads only)."""
    try:
        return sum(1 for n in os.listdir(layout.pending_deletes) if n.endswith(SUFFIX))
    except OSError:
        return 0


class PendingDeletes:
    def __init__(self, layout: NodeLayout, run: Callable[[protocol.Request], tuple[bytes, int]]) -> None:
        self.dir = layout.pending_deletes
        self._run = run  # serves one request (vnetd's dispatch), returns (stdout, exit code)
        self._lock = threading.Lock()

    def path_for(self, req: protocol.Request, network: object) -> str:
        key = attachment_key(req.plugin, network, req.env.get("CNI_CONTAINERID", ""), req.env.get("CNI_IFNAME", ""))
        return os.path.join(self.dir, key + SUFFIX)

    def carry_out_all(self) -> int:
        """Replay every pending DEL; returns how many are done (carried out, or set aside as
        unreadable)."""
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.endswith(SUFFIX))
        except FileNotFoundError:
            return 0
        done = 0
        for name in names:
            ok, _ = self._replay(os.path.join(self.dir, name))
            done += ok
        return done

    def before(self, req: protocol.Request, network: object) -> str:
        """Carry out a pending DEL of this request's attachment first. Returns "" when there was
        none or it is done; else why it failed (the call must then wait: code 11)."""
        path = self.path_for(req, network)
        if not os.path.exists(path):
            return ""
        ok, why = self._replay(path)
        return "" if ok else why

    def _replay(self, path: str) -> tuple[bool, str]:
        with self._lock:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return True, ""  # carried out meanwhile
            except OSError as exc:
                return False, f"cannot read {path}: {exc.strerror}"
            try:
                req = protocol.decode_request(data)
                if req.env.get("CNI_COMMAND") != "DEL":
                    raise protocol.ProtocolError("not a DEL")
            except protocol.ProtocolError as exc:
                log.warning("pending delete %s is unreadable (%s): moved aside to %s.bad", path, exc, path)
                os.replace(path, path + ".bad")
                return True, ""
            out, code = self._run(req)
            if code != 0:
                why = f"the pending DEL in {path} failed: {out.decode(errors='replace').strip()[:300]}"
                log.warning("%s", why)
                return False, why
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            log.info("carried out the DEL of %s/%s recorded while vnetd did not answer",
                     req.env.get("CNI_CONTAINERID", "")[:12], req.env.get("CNI_IFNAME", ""))
            return True, ""

    def run_periodically(self, stopping: threading.Event) -> threading.Thread:
        def loop() -> None:
            while not stopping.wait(RETRY_SECONDS):
                try:
                    self.carry_out_all()
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        log.warning("pending deletes: %s", exc)

        t = threading.Thread(target=loop, name="vnetd-pending-deletes", daemon=True)
        t.start()
        return t
