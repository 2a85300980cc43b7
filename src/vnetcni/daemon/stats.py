"""vnetd's count of calls that failed by deadline since it started, for an operator.

Kinds:
  expired       the call's deadline had passed (or its caller had hung up) before vnetd could
                start it (vnetd was stopped, or its workers were all busy): not started, code 11;
  lock_timeout  it waited for a lock (its attachment, a state file) until its deadline: code 11;
  rolled_back   an ADD completed after its deadline or after its caller hung up: undone, code 11;
  unanswered    the caller was gone when the answer was ready (any verb; a DEL or CHECK is kept,
                being idempotent).
vnetd writes `NodeLayout.daemon_stats` at start and on every such event (they are rare: nothing
is written on the ordinary path); `vnetctl status` reads it (a read with no side effects).
"""

from __future__ import annotations

import json
import os
import threading
import time

from ..state.durable import atomic_write

KINDS = ("expired", "lock_timeout", "rolled_back", "unanswered")


class DeadlineStats:
    def __init__(self, path: str, clock=time.time) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._doc = {"pid": os.getpid(), "started": clock(), "counts": {k: 0 for k in KINDS},
                     "last": None}
        self._clock = clock

    def start(self) -> None:
        self._write()

    def count(self, kind: str, what: str = "") -> None:
        with self._lock:
            self._doc["counts"][kind] += 1
            self._doc["last"] = {"kind": kind, "at": self._clock(), "call": what[:200]}
            self._write()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._doc["counts"])

    def _write(self) -> None:
        try:
            atomic_write(self.path, (json.dumps(self._doc, sort_keys=True) + "\n").encode(), mode=0o644)
        except OSError:
            pass  # a full state directory: the counters live on in memory and in the metrics


def read(path: str) -> dict | None:
    """The counters vnetd last wrote (None if there are none or they are unreadable)."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("counts"), dict):
        return None
    return doc


def summary(doc: dict) -> str:
    """One line for `vnetctl status`."""
    counts = {k: int(doc["counts"].get(k, 0) or 0) for k in KINDS}
    total = sum(counts.values())
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(doc.get("started") or 0)))
    if not total:
        return f"no call failed by deadline since vnetd started ({since})"
    parts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
    line = f"{total} call(s) failed by deadline since vnetd started ({since}): {parts}"
    last = doc.get("last")
    if isinstance(last, dict) and last.get("at"):
        at = time.strftime("%H:%M:%S", time.localtime(float(last["at"])))
        line += f"; last {at} {last.get('kind', '')} {last.get('call', '')}".rstrip()
    return line
