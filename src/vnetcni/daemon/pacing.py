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
