"""The `vnet-ipam` handlers: ADD, DEL, CHECK, STATUS and GC over the node's pool.

Used three ways: as the executable `vnet-ipam` (the `ipam` of any main plugin, e.g. the
reference `bridge`), in-process by the `vnet` plugin, and warm inside vnetd, which refreshes the
pool in a background thread (`refresh_pool`) and builds `IpamPlugin(refresh_on_add=False)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..cni import deadline
from ..cni.config import NetConf
from ..cni.errors import (CHECK_FAILED, CNIError, PLUGIN_NOT_AVAILABLE, TRY_AGAIN_LATER,
                          UNKNOWN_CONTAINER)
from ..cni.invocation import Invocation
from ..cni.result import IPConfig, Result, Route
from ..node.layout import NodeLayout
from ..state import attachments
from ..state.durable import CorruptState
from .allocator import allocate, release
from .config import IpamConfig
from .model import Allocation, IpamState, allocation_key, ip_of
from .refresh import RefreshOutcome, SourceFactory, refresh_pool
from .store import IpamStore

__all__ = ["IpamPlugin", "refresh_pool", "RefreshOutcome", "build_result"]


def build_result(alloc: Allocation, cfg: IpamConfig) -> Result:
    """ips (per family held: the subnet's prefix, its first host as gateway), routes (configured,
    else a default route per family via its gateway) and dns (configured)."""
    if cfg.routes is not None:
        routes = list(cfg.routes)  # the config is parsed per call: nobody else holds these
    else:
        routes = [Route(dst="::/0" if ":" in address else "0.0.0.0/0", gw=gateway)
                  for address, gateway in alloc.addresses]
    return Result(ips=[IPConfig(address=address, gateway=gateway) for address, gateway in alloc.addresses],
                  routes=routes, dns=cfg.dns)


def _no_pool_error(state: IpamState, cfg: IpamConfig) -> CNIError:
    source = state.refresh.source or cfg.source_description
    why = state.refresh.last_error or "no answer yet"
    return CNIError(TRY_AGAIN_LATER, f"no address pool learned yet from the node's metadata ({source}): {why}",
                    "vnet-ipam keeps serving from the last good answer once it has one; try again later")


def _lock_dir(cfg: IpamConfig) -> str:
    return NodeLayout(cfg.state_dir).lock_dir


class _PoolUnknown(Exception):
    """No pool is known yet: leave the lock, learn it, try again."""


class IpamPlugin:
    def __init__(self, source_factory: SourceFactory | None = None,
                 clock: Callable[[], float] = time.time, refresh_on_add: bool = True) -> None:
        """`source_factory(IpamConfig) -> MetadataSource` replaces the configured source (tests,
        the simulator); `refresh_on_add=False` when something else (vnetd) keeps the pool fresh:
        ADD then queries the metadata only while no pool is known at all."""
        self.source_factory = source_factory
        self.clock = clock
        self.refresh_on_add = refresh_on_add

    def refresh(self, conf: IpamConfig | NetConf | dict) -> RefreshOutcome:
        return refresh_pool(conf, source_factory=self.source_factory, clock=self.clock)

    def add(self, inv: Invocation, conf: NetConf) -> Result:
        return self.add_reporting(inv, conf)[0]

    def add_reporting(self, inv: Invocation, conf: NetConf, commit: bool = True) -> tuple[Result, bool]:
        """ADD, and whether this call created the allocation (False: the attachment held it
        already, and an ADD that fails later must not release it). Holds the attachment's lock;
        an ADD whose caller is gone when it is done releases what it created (code 11), unless
        `commit` is False (a main plugin calling in-process decides that itself)."""
        cfg = IpamConfig.from_netconf(conf)
        with attachments.exclusive((_lock_dir(cfg),), conf.name, inv.container_id, inv.ifname):
            alloc, created = self._add(inv, conf, cfg)
            if commit and created:
                deadline.note_created()
            if commit and created and deadline.abandoned():
                self.delete(inv, conf)
                deadline.commit_point("its address was released")
            return build_result(alloc, cfg), created

    def _add(self, inv: Invocation, conf: NetConf, cfg: IpamConfig) -> tuple[Allocation, bool]:
        store = IpamStore(cfg.state_dir)
        key = allocation_key(conf.name, inv.container_id, inv.ifname)
        if self.refresh_on_add:
            snapshot = store.read_for_update()
            store.require_recovered(snapshot)
            if key not in snapshot.allocations:
                self.refresh(cfg)  # rate-limited; a failure is recorded and the last pool used
        try:
            # Kept fresh by vnetd: the metadata is asked here only while no pool is known at all.
            return self._allocate(store, cfg, conf, inv, key, learn_if_unknown=not self.refresh_on_add)
        except _PoolUnknown:
            self.refresh(cfg)  # outside the pool's lock
            return self._allocate(store, cfg, conf, inv, key, learn_if_unknown=False)

    def _allocate(self, store: IpamStore, cfg: IpamConfig, conf: NetConf, inv: Invocation, key: str,
                  learn_if_unknown: bool) -> tuple[Allocation, bool]:
        def change(state: IpamState) -> tuple[Allocation, bool]:
            store.require_recovered(state)
            held = key in state.allocations
            if not held and state.pool is None:
                if learn_if_unknown:
                    raise _PoolUnknown
                raise _no_pool_error(state, cfg)
            return allocate(state, conf.name, inv.container_id, inv.ifname, self.clock(),
                            pod_name=inv.pod_name, pod_namespace=inv.pod_namespace), not held

        return store.apply(change)  # concurrent ADDs in vnetd share one write

    def delete(self, inv: Invocation, conf: NetConf) -> None:
        """Release by (network, container, interface) alone: no netns or prevResult needed, and
        nothing to release is success."""
        cfg = IpamConfig.from_netconf(conf)
        store = IpamStore(cfg.state_dir)
        key = allocation_key(conf.name, inv.container_id, inv.ifname)
        with attachments.exclusive((_lock_dir(cfg),), conf.name, inv.container_id, inv.ifname, last=True):
            self._delete(store, key, cfg)

    def _delete(self, store: IpamStore, key: str, cfg: IpamConfig) -> None:
        try:
            self._release(store, key, cfg)
        except CorruptState:
            # The unreadable file was just moved aside (the ADD guard now holds until a rebuild);
            # a DEL that fails would only make the runtime retry forever.
            self._release(store, key, cfg)

    def _release(self, store: IpamStore, key: str, cfg: IpamConfig) -> None:
        store.apply(lambda state: release(state, key, self.clock(), cfg.cooldown_seconds))

    def check(self, inv: Invocation, conf: NetConf) -> None:
        cfg = IpamConfig.from_netconf(conf)
        with attachments.exclusive((_lock_dir(cfg),), conf.name, inv.container_id, inv.ifname):
            self._check(inv, conf, cfg)

    def _check(self, inv: Invocation, conf: NetConf, cfg: IpamConfig) -> None:
        store = IpamStore(cfg.state_dir)
        state = store.read()
        store.require_recovered(state)
        alloc = state.allocations.get(allocation_key(conf.name, inv.container_id, inv.ifname))
        if alloc is None:
            raise CNIError(UNKNOWN_CONTAINER, f"no address is allocated to container {inv.container_id} "
                                              f"interface {inv.ifname} on network {conf.name}")
        if state.pool is not None:
            for ip in alloc.ips:
                if ip not in state.pool_ips():
                    raise CNIError(CHECK_FAILED, f"address {ip} is no longer listed by the node's "
                                                 "metadata (quarantined until the pod is deleted)")
        prev = conf.prev_result or {}
        prev_ips = {ip_of(str(ip.get("address", ""))) for ip in prev.get("ips") or [] if isinstance(ip, dict)}
        if prev_ips and set(alloc.ips) - prev_ips:
            raise CNIError(CHECK_FAILED, f"prevResult lists {', '.join(sorted(prev_ips))} but IPAM "
                                         f"holds {', '.join(a for a, _ in alloc.addresses)} for this container")

    def status(self, inv: Invocation, conf: NetConf) -> None:
        """Ready when a pool is known, or can be learned now."""
        cfg = IpamConfig.from_netconf(conf)
        store = IpamStore(cfg.state_dir)
        try:
            state = store.read()
        except CorruptState as err:  # STATUS speaks in its own two codes
            raise CNIError(PLUGIN_NOT_AVAILABLE, err.msg, err.details) from None
        pending = store.unrecovered(state)
        if pending:
            raise CNIError(PLUGIN_NOT_AVAILABLE, f"IPAM state in {cfg.state_dir} needs a rebuild "
                                                 f"(corrupt: {', '.join(pending)}); run `vnetctl ipam --rebuild`")
        if state.pool is not None:
            return
        outcome = self.refresh(cfg)
        if outcome.pool is None:
            raise CNIError(PLUGIN_NOT_AVAILABLE, _no_pool_error(store.read(), cfg).msg)

    def gc(self, inv: Invocation, conf: NetConf, valid: list[dict]) -> None:
        """Release this network's allocations whose attachment the runtime no longer lists, except
        those whose attachment lock another call holds: their ADD is still in flight."""
        cfg = IpamConfig.from_netconf(conf)
        store = IpamStore(cfg.state_dir)
        keep = {(str(v.get("containerID", "")), str(v.get("ifname", ""))) for v in valid}
        lock_dir = _lock_dir(cfg)
        with store.transaction() as state:
            now = self.clock()
            stale = [a.key for a in state.allocations.values()
                     if a.network == conf.name and (a.container_id, a.ifname) not in keep
                     and not attachments.busy(lock_dir, a.network, a.container_id, a.ifname)]
            for key in stale:
                release(state, key, now, cfg.cooldown_seconds)
