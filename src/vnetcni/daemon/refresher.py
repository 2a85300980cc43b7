"""Background refresh of every address pool vnetd has seen, so no ADD waits on the metadata.

Pools are learned at start from the state (each `ipam.json` keeps the ipam keys of its last
refresh: state directory, metadata source, intervals), so refresh, quarantine and the pool
metrics resume after a restart before any ADD; and then from the requests themselves (each
vnet-ipam configuration names its state directory and metadata source). Each is refreshed every
`refreshSeconds`; after a failure the next attempt backs off exponentially (up to five minutes,
however many failures) while allocation goes on from the last good pool. The cross-process rate limit of refresh_pool still holds, so vnetd and plugins running
in-process never query the source more often than configured.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ..ipam.config import IpamConfig
from ..ipam.refresh import refresh_pool
from .pacing import Background

log = logging.getLogger("vnetd")
MAX_BACKOFF_SECONDS = 300.0
_MAX_DOUBLINGS = 32  # 2**32 times any interval is past the cap: no float overflow, ever


def backoff_seconds(interval: float, failures: int) -> float:
    """interval * 2**failures, capped at MAX_BACKOFF_SECONDS (and at least the interval)."""
    return max(interval, min(interval * float(2 ** min(failures, _MAX_DOUBLINGS)), MAX_BACKOFF_SECONDS))


@dataclass
class Tracked:
    cfg: IpamConfig
    next_at: float = 0.0
    failures: int = 0  # consecutive
    total_failures: int = 0
    last_ok: float | None = None


class PoolRefresher:
    def __init__(self, clock=time.time, source_factory=None) -> None:
        self._clock = clock
        self._source_factory = source_factory
        self._pools: dict[tuple[str, str], Tracked] = {}
        self._lock = threading.Lock()
        self._background = Background("pool-refresher", self._run, join_seconds=10)
        self._wake, self._stop = self._background.wake, self._background.stopping

    def observe(self, cfg: IpamConfig) -> None:
        key = (cfg.state_dir, cfg.source_description)
        with self._lock:
            if key in self._pools:
                self._pools[key].cfg = cfg
                return
            self._pools[key] = Tracked(cfg)
        self._wake.set()

    def learn_from_state(self, state_dirs) -> list[str]:
        """Track the pools whose ipam.json names how it was last refreshed (vnetd at start).
        Returns the state directories learned; an unreadable or unconfigured one is skipped (the
        plugins report a corrupt state themselves; an ADD names its pool later)."""
        from ..ipam.store import IpamStore

        learned = []
        for sd in dict.fromkeys(state_dirs):
            try:
                section = IpamStore(sd).read().refresh.config
                if not section:
                    continue
                cfg = IpamConfig.from_sections(dict(section, stateDir=sd))
            except Exception as exc:  # noqa: BLE001 - one bad state directory must not stop the others
                log.warning("cannot resume refreshing the pool in %s: %s", sd, getattr(exc, "msg", exc))
                continue
            self.observe(cfg)
            learned.append(sd)
        return learned

    def tracked(self) -> list[Tracked]:
        with self._lock:
            return list(self._pools.values())

    def start(self) -> None:
        self._background.start()

    def stop(self) -> None:
        self._background.stop()

    def refresh_due(self) -> None:
        now = self._clock()
        for t in self.tracked():
            if now < t.next_at:
                continue
            try:
                outcome = refresh_pool(t.cfg, source_factory=self._source_factory, clock=self._clock,
                                       wait_if_unknown=False)
            except Exception as exc:  # noqa: BLE001 - a corrupt or unwritable state: the next pool still goes
                outcome = None
                error = getattr(exc, "msg", None) or f"{type(exc).__name__}: {exc}"
            else:
                error = outcome.error if outcome.attempted else ""
            interval = t.cfg.refresh_seconds
            if error:
                t.failures += 1
                t.total_failures += 1
                backoff = backoff_seconds(interval, t.failures)
                t.next_at = now + backoff
                log.warning("metadata refresh failed for %s (%s); next try in %.0f s",
                            t.cfg.source_description, error, backoff)
            else:
                if outcome is not None and outcome.attempted:
                    t.failures = 0
                    t.last_ok = now
                t.next_at = now + interval

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_due()
            except Exception:
                log.exception("pool refresh loop")
            self._wake.wait(1.0)
            self._wake.clear()
