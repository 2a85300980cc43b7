"""vnetd's teardown reaper: the veths of DELs answered before the kernel removed them.

A DEL through vnetd (plugins/vnet.py) marks the attachment's endpoint record "tearing down"
(durably, the attachment's lock held) and answers at once: the kernel's veth teardown (~20 ms,
mostly an RCU grace period) is no longer on the runtime's path. The record keeps its vnet-ipam
allocation, so the address is neither free nor cooling down: no pod can get it while the old
veth exists. The reaper then, in rounds:
1. takes the locks of the marked attachments nobody else holds (an ADD of the same attachment
   that holds its lock takes the teardown over: it deletes the veth itself and reuses the
   address; a busy one waits for the next round);
2. deletes their veths as one link group (one request, one grace period for the whole batch:
   dataplane/linux.py delete_pod_links);
3. releases their addresses (with the usual cooldown), one write of ipam.json per IPAM state
   directory, and only then drops their records, one write of endpoints.json.
A crash anywhere in between leaks nothing: the mark is on disk, and vnetd finishes every marked
teardown before it serves (and when it stops); each step is idempotent.

When a round starts: not while DELs keep arriving. A burst of DELs (a node drained, a
deployment scaled down) is answered fastest when the reaper does not compete with it for the
CPUs (the kernel's veth teardown is CPU work too) and for the endpoints file, and its veths are
deleted in one batch afterwards. So a round starts once no DEL was marked for QUIET_SECONDS, and
at the latest MAX_WAIT_SECONDS after the first DEL it will tear down: a bounded delay, during
which the addresses stay held back (never handed out while their veths exist). An ADD that
finds the pool full does not wait for it: it runs a round itself (plugins/vnet.py). A marked
attachment whose lock was busy (its DEL still answering, an ADD taking it over) is tried again
BUSY_RETRY_SECONDS later (doubling up to PERIOD_SECONDS), not only at the next DEL.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from typing import Callable

from ..node.layout import NodeLayout
from ..state import attachments, locks
from .pacing import Background, wait_until_quiet

log = logging.getLogger("vnetd")
PERIOD_SECONDS = 5.0  # a round at least this often (a teardown a failed round left behind)
QUIET_SECONDS = 0.01  # a round starts once no DEL was marked for this long...
MAX_WAIT_SECONDS = 0.25  # ...or this long after the DEL that woke it, whichever comes first
BUSY_RETRY_SECONDS = 0.02  # a marked attachment another call held: tried again this soon


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class Reaper:
    def __init__(self, state_dir: str, dataplane_factory: Callable[[str], object] | None = None,
                 clock: Callable[[], float] = time.time, batch_seconds: float = 0.0) -> None:
        """batch_seconds: how long a round waits after the first DEL that woke it, collecting
        more into its batch (vnetd --teardown-batch-ms)."""
        self._batch = batch_seconds
        self._dirs = dict.fromkeys([NodeLayout(state_dir).state_dir])  # vnet state directories
        self._factory = dataplane_factory or _linux_dataplane
        self._dataplanes: dict[str, object] = {}
        self._clock = clock
        self._background = Background("vnetd-reaper", self._loop, join_seconds=30)
        self._wake, self._stopping = self._background.wake, self._background.stopping
        self._round = threading.Lock()
        self._last_queued = 0.0  # time.monotonic() of the latest DEL marked
        self._busy = False  # the last round left a marked attachment another call held
        self.reaped = 0  # teardowns finished since start (status, tests)

    # --- called by the DEL path ---------------------------------------------------------
    def queue(self, state_dir: str) -> None:
        """A teardown was marked in this vnet state directory: reap it soon."""
        if state_dir not in self._dirs:
            self._dirs[state_dir] = None
        self._last_queued = time.monotonic()
        self._wake.set()

    # --- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._background.start()

    def stop(self) -> None:
        """Stop the thread and finish what is marked (a clean stop leaves no veth behind)."""
        self._background.stop()
        try:
            self.reap_all()
        except Exception as exc:  # noqa: BLE001 - the marks stay: the next vnetd finishes them
            log.warning("teardown reaper at stop: %s", getattr(exc, "msg", exc))
        for dp in self._dataplanes.values():
            with contextlib.suppress(Exception):
                dp.close()

    def _loop(self) -> None:
        retry = None  # seconds until busy attachments are tried again (None: none is waiting)
        while not self._stopping.is_set():
            woken = self._wake.wait(PERIOD_SECONDS if retry is None else retry)
            self._wake.clear()
            if self._batch and not self._stopping.is_set():
                self._stopping.wait(self._batch)
            if woken:
                self._settle()
            if self._stopping.is_set():
                return  # stop() finishes what is marked
            try:
                self.reap_all()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("teardown reaper: %s", getattr(exc, "msg", exc))
            if self._busy:
                retry = BUSY_RETRY_SECONDS if retry is None else min(retry * 2, PERIOD_SECONDS)
            else:
                retry = None

    def _settle(self) -> None:
        """Wait while DELs keep arriving: until none was marked for QUIET_SECONDS, at most
        MAX_WAIT_SECONDS (or until vnetd stops)."""
        wait_until_quiet(self._stopping, lambda: self._last_queued, QUIET_SECONDS, MAX_WAIT_SECONDS)

    # --- the work -----------------------------------------------------------------------
    def reap_all(self) -> int:
        done = 0
        busy = False
        for state_dir in list(self._dirs):
            finished, left_busy = self._reap(state_dir)
            done += finished
            busy = busy or left_busy
        self._busy = busy
        return done

    def reap(self, state_dir: str) -> int:
        """One round in one vnet state directory; returns how many teardowns it finished."""
        return self._reap(state_dir)[0]

    def _reap(self, state_dir: str) -> tuple[int, bool]:
        """reap(), and whether it left a marked attachment another call held."""
        from ..plugins.endpoints import EndpointStore
        from ..plugins.reconcile import release_addresses

        with self._round:
            store = EndpointStore(state_dir)
            marked = store.tearing_down()
            if not marked:
                return 0, False
            lock_dir = NodeLayout(state_dir).lock_dir
            with contextlib.ExitStack() as held:
                mine = [rec for rec in marked.values() if self._take(held, lock_dir, rec)]
                busy = len(mine) < len(marked)  # the others: tried again soon (_loop)
                if not mine:
                    return 0, busy
                current = store.all()  # under the locks: what is still marked is ours
                mine = [rec for rec in mine if current.get(rec.key) == rec]
                if not mine:
                    return 0, busy
                self._dataplane(lock_dir).delete_pod_links([rec.host_ifname for rec in mine])
                by_ipam: dict[str, list] = {}
                for rec in mine:
                    if rec.vnet_ipam:
                        by_ipam.setdefault(rec.ipam_state_dir or state_dir, []).append(rec)
                now = self._clock()
                for ipam_dir, recs in by_ipam.items():
                    release_addresses(ipam_dir, recs, now)
                store.remove_many(rec.key for rec in mine)
            self.reaped += len(mine)
            return len(mine), busy

    @staticmethod
    def _take(held: contextlib.ExitStack, lock_dir: str, rec) -> bool:
        """The attachment's locks (vnet's and its vnet-ipam's), without waiting; removed when
        released, like a DEL's. False (holding none of them) if another call holds one."""
        dirs = dict.fromkeys([lock_dir, NodeLayout(rec.ipam_state_dir).lock_dir if rec.ipam_state_dir else lock_dir])
        taken = []
        try:
            for d in dirs:
                taken.append(locks.hold(attachments.lock_path(d, rec.network, rec.container_id, rec.ifname),
                                        timeout=0, transient=True, remove=True,
                                        purpose=f"tearing down {rec.key}"))
        except locks.LockTimeout:
            for release in reversed(taken):
                release()
            return False
        for release in taken:
            held.callback(release)
        return True

    def _dataplane(self, lock_dir: str):
        dp = self._dataplanes.get(lock_dir)
        if dp is None:
            dp = self._dataplanes[lock_dir] = self._factory(lock_dir)
        return dp


def wait_until_torn_down(state_dir: str, timeout: float = 10.0) -> bool:
    """Until no record in this vnet state directory is marked tearing down (vnetd's reaper has
    removed their veths and released their addresses), at most `timeout` seconds. Reads only."""
    from ..plugins.endpoints import EndpointStore

    store = EndpointStore(state_dir)
    until = time.monotonic() + timeout
    while True:
        try:
            if not store.exists() or not store.tearing_down():
                return True
        except Exception:  # noqa: BLE001 - unreadable: the caller's own checks report it
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.02)


def _linux_dataplane(lock_dir: str):
    from ..dataplane.linux import LinuxDataplane

    return LinuxDataplane(lock_dir=lock_dir)
