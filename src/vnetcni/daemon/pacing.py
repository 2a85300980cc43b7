"""When vnetd's background work starts: once the calls that feed it pause (reaper.py: the veths
of answered DELs; afteranswer.py: the gratuitous ARPs of answered ADDs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_until_quiet(stopping: threading.Event, last_queued: Callable[[], float], quiet: float,
                     longest: float) -> None:
    """Return once nothing was queued for `quiet` seconds (`last_queued()`: time.monotonic() of
    the latest), at most `longest` seconds from now, or as soon as `stopping` is set."""
    until = time.monotonic() + longest
    while not stopping.is_set():
        now = time.monotonic()
        left = last_queued() + quiet - now
        if left <= 0 or now >= until:
            return
        stopping.wait(min(left, until - now))


class Background:
    """A daemon thread running `target` (which loops until `stopping` is set; `wake` rouses it
    early); stop() sets both and waits for it at most `join_seconds`."""

    def __init__(self, name: str, target: Callable[[], None], join_seconds: float) -> None:
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._name, self._target, self._join = name, target, join_seconds
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._target, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self._join)
