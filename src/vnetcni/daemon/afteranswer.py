"""vnetd's queue of work left until after an answer (cni/deadline.py `after_answer`).

Today that is a new pod's gratuitous ARP. The bridge floods it to every port and every pod's
namespace processes it: ~0.25 ms of CPU with 30 pods on the node, ~1 ms with 250, partly under
the rtnl lock the next ADD needs. Nothing in the ADD's answer depends on it, and a pod's
containers start well after its ADD is answered, so it is sent soon after, not in between: the
worker that answered hands it here and goes back to accepting calls.

When: like the teardown reaper (reaper.py), not while ADDs keep being answered. A round runs once
no work was queued for QUIET_SECONDS, and at the latest MAX_WAIT_SECONDS after the work that woke
it: a bounded delay. vnetd stopping does what is queued before it exits. A piece of work that
fails is logged (never silent) and does not keep the others from running. Each piece checks by
itself that what it acts on is still there (a pod deleted meanwhile has nothing to announce).
The announcement (the pod's link given the MAC it has) also empties the pod's own neighbour
table, as any MAC change does: a pod whose containers already resolved a neighbour in those
milliseconds resolves it once more (bridge mode pins no neighbour entries in the pod).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .pacing import Background, wait_until_quiet

log = logging.getLogger("vnetd")
QUIET_SECONDS = 0.01  # a round runs once nothing was queued for this long...
MAX_WAIT_SECONDS = 0.25  # ...or this long after the work that woke it, whichever comes first

Work = Callable[[], None]


class AfterAnswer:
    def __init__(self) -> None:
        self._items: list[tuple[Work, str]] = []
        self._lock = threading.Lock()
        self._background = Background("vnetd-after-answer", self._loop, join_seconds=30)
        self._wake, self._stopping = self._background.wake, self._background.stopping
        self._last_queued = 0.0  # time.monotonic() of the latest work queued
        self.done = 0  # pieces of work run (tests, status)
        self.failed = 0

    def submit(self, work: list[Work], what: str) -> None:
        """Do `work` (in order) soon, off the caller's thread; `what` names the call in the log."""
        if not work:
            return
        with self._lock:
            self._items.extend((w, what) for w in work)
            self._last_queued = time.monotonic()
        if not self._background.started or self._stopping.is_set():
            self.run_all()  # not started, or stopping: nobody else would do it
        else:
            self._wake.set()

    def start(self) -> None:
        self._background.start()

    def stop(self) -> None:
        """Stop the thread and do what is queued."""
        self._background.stop()
        self.run_all()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            self._settle()
            self.run_all()

    def _settle(self) -> None:
        wait_until_quiet(self._stopping, lambda: self._last_queued, QUIET_SECONDS, MAX_WAIT_SECONDS)

    def run_all(self) -> int:
        """Do everything queued now; returns how many pieces ran."""
        with self._lock:
            items, self._items = self._items, []
        for work, what in items:
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - logged; the others still run
                self.failed += 1
                log.warning("%s: after its answer: %s", what, exc)
            else:
                self.done += 1
        return len(items)
