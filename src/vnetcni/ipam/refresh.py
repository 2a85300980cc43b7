"""Learning the node's pool from its metadata source, rate-limited across processes.

The rate limit is on *attempts*: a process first claims the attempt in the state document
(under the lock, a few microseconds), then queries the source with no lock held, then records
the outcome (under the lock again). So however many plugin processes run at once, the source
is asked at most once per `refreshSeconds`, also while it is failing. A failed or garbage
answer only records `lastError`: allocation goes on from the last good pool.

When no pool was ever learned and another process's attempt is in flight, a caller waits
(bounded by the timeout) for that outcome instead of failing at once: fifty pods scheduled on a
fresh node then all get addresses from the one query.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..cni._record import FrozenRecord
from .allocator import apply_pool
from .config import IpamConfig
from .model import IpamState, NodePool, RefreshRecord
from .store import IpamStore

# (IpamConfig) -> MetadataSource (see sources.py); the parser and sources are imported only
# when a refresh is actually due, keeping them off most plugin calls.
SourceFactory = Callable[[IpamConfig], object]
_POLL_SECONDS = 0.02


class RefreshOutcome(FrozenRecord):
    __slots__ = ("attempted", "error", "pool")
    attempted: bool  # False: rate-limited (another attempt was recent)
    error: str  # of this attempt, or the last recorded one when not attempted
    pool: NodePool | None  # the pool known afterwards (perhaps an older one)

    def __init__(self, attempted: bool, error: str, pool: NodePool | None) -> None:
        self._set(attempted=attempted, error=error, pool=pool)

    @property
    def ok(self) -> bool:
        return self.pool is not None and not (self.attempted and self.error)


def is_due(record: RefreshRecord, now: float, interval: float) -> bool:
    if record.last_attempt is None or now < record.last_attempt:  # never, or the clock went back
        return True
    return now - record.last_attempt >= interval


def _skipped(state: IpamState) -> RefreshOutcome:
    return RefreshOutcome(attempted=False, error=state.refresh.last_error, pool=state.pool)


def _wait_for_outcome(store: IpamStore, cfg: IpamConfig, state: IpamState, now: float) -> IpamState:
    """With no pool known, wait for another process's in-flight attempt to finish."""
    patience = 2 * cfg.timeout_seconds + 1.0  # the fetch's own bound, plus its state updates
    if state.refresh.last_attempt is None or now - state.refresh.last_attempt > patience:
        return state  # nothing in flight, or its process died: do not wait for it
    deadline = time.monotonic() + patience
    while state.pool is None and state.refresh.in_flight and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        state = store.read()
    return state


def _fetch(cfg: IpamConfig, source) -> tuple[tuple[NodePool, NodePool | None] | None, str]:
    from .metadata import MetadataError, pools_from_metadata

    try:
        return pools_from_metadata(source.fetch(), cfg.mac), ""
    except MetadataError as exc:
        return None, str(exc)
    except Exception as exc:  # a broken source must not break allocation from the last pool
        return None, f"{type(exc).__name__}: {exc}"


def refresh_pool(conf: "IpamConfig | object", *, source_factory: SourceFactory | None = None,
                 clock: Callable[[], float] = time.time, wait_if_unknown: bool = True) -> RefreshOutcome:
    """Refresh the pool if `refreshSeconds` passed since the last attempt (by any process).

    `conf`: an IpamConfig, a NetConf, a whole netconf dict or just its ipam section. Safe to
    call from a background thread (vnetd) or on the ADD path; never raises for a failed query,
    only for unusable configuration or state (CNIError).
    """
    cfg = IpamConfig.coerce(conf)
    store = IpamStore(cfg.state_dir)
    now = clock()
    snapshot = store.read()
    if not is_due(snapshot.refresh, now, cfg.refresh_seconds):
        if snapshot.pool is None and wait_if_unknown and snapshot.refresh.in_flight:
            snapshot = _wait_for_outcome(store, cfg, snapshot, now)
        return _skipped(snapshot)
    source = (source_factory or IpamConfig.default_source)(cfg)
    with store.transaction() as state:
        # The clock is read again under the lock: a process that read it before another one's
        # claim would otherwise see that claim in its future and take it for the clock going
        # back, and ask the metadata a second time.
        now = max(now, clock())
        claimed = is_due(state.refresh, now, cfg.refresh_seconds)
        if claimed:
            state.refresh.last_attempt = now
            state.refresh.source = source.description
            state.refresh.config = cfg.refresh_section()
    if not claimed:  # another process claimed this attempt between our read and our lock
        if state.pool is None and wait_if_unknown:
            state = _wait_for_outcome(store, cfg, state, now)
        return _skipped(state)
    pools, error = _fetch(cfg, source)
    with store.transaction() as state:
        done = max(clock(), now)
        state.refresh.last_outcome = done
        state.refresh.last_error = error
        if pools is not None:
            apply_pool(state, pools[0], done, source.description, pool6=pools[1])
        return RefreshOutcome(attempted=True, error=error, pool=state.pool)
