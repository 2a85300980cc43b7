"""Rebuilding the allocations after `ipam.json` was found corrupt (`vnetctl ipam --rebuild`).

What a rebuild trusts: the vnet plugin's endpoint records (`endpoints.json` in the same state
directory; format in docs/architecture.md), written only after a pod's interface existed, and
read under their lock (no ADD or DEL changes them while the rebuild runs). It never drops
anything: allocations already in `ipam.json` are kept, records are added for the addresses that
endpoints hold, and an address claimed by two owners is reported and left with the one
`ipam.json` already names. Afterwards every `ipam.json.corrupt-*` file present is listed in
`recovered` (the files themselves stay for the operator), which lifts the ADD guard.

Without evidence the guard stays: when no endpoint record beside this `ipam.json` can name an
address it held (no `endpoints.json` here: vnet-ipam's stateDir is not vnet's, or vnet-ipam
runs under another main plugin such as the reference `bridge`; or every record was addressed
elsewhere) the rebuild refuses, unless forced: then the next ADDs may hand out addresses that
running pods still hold, and the operator has said so.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable

from ..cni._record import Record
from ..cni.errors import CNIError, STATE_CORRUPT
from ..state.durable import CorruptState
from .model import Allocation, IpamState, allocation_key, from_iso
from .store import IpamStore

OUR_IPAM = "vnet-ipam"
FORCE_RISK = ("the addresses running pods hold are unknown: until every such pod is deleted, the next "
              "ADDs may hand one of them to a new pod (two pods with one address)")


class NoEvidence(CNIError):
    def __init__(self, state_dir: str, why: str) -> None:
        super().__init__(STATE_CORRUPT, f"refusing to rebuild the IPAM state in {state_dir}: {why}, so "
                                        "nothing tells which addresses running pods hold",
                         f"with --force the rebuild lifts the guard anyway: {FORCE_RISK}")
        self.why = why


class RebuildReport(Record):
    __slots__ = ("adopted", "kept", "conflicts", "skipped", "recovered", "endpoints_found", "forced")
    adopted: list[str]  # allocations added from endpoint records
    kept: int  # allocations ipam.json already had
    conflicts: list[str]
    skipped: list[str]  # records that hold no vnet-ipam address of this state directory
    recovered: list[str]  # corrupt files now accounted for
    endpoints_found: bool
    forced: str  # why the rebuild had no evidence, when it was forced ("" otherwise)

    def __init__(self) -> None:
        self.adopted = []
        self.kept = 0
        self.conflicts = []
        self.skipped = []
        self.recovered = []
        self.endpoints_found = False
        self.forced = ""

    def to_dict(self) -> dict:
        return {"adopted": self.adopted, "kept": self.kept, "conflicts": self.conflicts,
                "skipped": self.skipped, "recovered": self.recovered,
                "endpointsFound": self.endpoints_found, "forced": self.forced}


def _addressed_here(rec, state_dir: str) -> str:
    """"" when the record's address came from this vnet-ipam state directory, else why not."""
    if not rec.vnet_ipam:
        return f"addressed by {rec.ipam!r}, not {OUR_IPAM}"
    if rec.ipam_state_dir and os.path.normpath(rec.ipam_state_dir) != os.path.normpath(state_dir):
        return f"addressed by the vnet-ipam state in {rec.ipam_state_dir}, not this one"
    return ""


def _endpoint_allocation(name: str, rec, state: IpamState, now: float) -> Allocation | str:
    """The allocation an endpoint record implies, or why it implies none."""
    fields = [rec.network, rec.container_id, rec.ifname]
    candidates = []
    for cidr in rec.ips:
        try:
            iface = ipaddress.ip_interface(cidr)
        except (ValueError, TypeError):
            continue
        if isinstance(cidr, str) and "/" in cidr:
            candidates.append((iface, cidr))
    # Dual-stack records: prefer the pool's subnet when known, else IPv4 (as the pool does).
    subnet = ipaddress.ip_network(state.pool.subnet) if state.pool is not None else None
    candidates.sort(key=lambda c: (subnet is not None and c[0].ip not in subnet, c[0].version != 4))
    if not candidates:
        return f"{name}: no address"
    try:
        created = from_iso(rec.created)
    except ValueError:
        created = now
    address, gateway = _as_allocated(state, *candidates[0])
    alloc = Allocation(address=address, gateway=gateway, network=fields[0], container_id=fields[1],
                       ifname=fields[2], allocated=created, pod_name=rec.pod_name, pod_namespace=rec.pod_namespace)
    if state.pool6 is not None:  # dual-stack: the record's address in the IPv6 pool's subnet
        subnet6 = ipaddress.ip_network(state.pool6.subnet)
        six = [c for c in candidates[1:] if c[0].version == 6 and c[0].ip in subnet6]
        if six:
            address6, gateway6 = _as_allocated(state, *six[0])
            alloc = alloc.replace(address6=address6, gateway6=gateway6)
    return alloc


def _as_allocated(state: IpamState, iface, cidr: str) -> tuple[str, str]:
    """(address, gateway) as vnet-ipam hands them out: with the pool's prefix and gateway when a
    pool holds the address (a transparent-mode record says /32 or /128), else as recorded."""
    for pool in state.pools:
        if iface.ip in ipaddress.ip_network(pool.subnet):
            return pool.cidr(str(iface.ip)), pool.gateway
    return cidr, str(iface.network.network_address + 1)  # the subnet's first host, as the pool's


def rebuild(state_dir: str, clock: Callable[[], float] = time.time, force: bool = False) -> RebuildReport:
    """Rebuild from the endpoint records beside ipam.json (read under their lock, held for the
    whole rebuild). NoEvidence (code 101) when there are none that could name an address of
    this state, unless `force`."""
    from ..plugins.endpoints import EndpointStore

    report = RebuildReport()
    endpoints = EndpointStore(state_dir)
    report.endpoints_found = endpoints.exists()
    guard = _guard_to_lift(state_dir)  # nothing to lift: a rebuild without evidence is harmless
    if not report.endpoints_found:
        if guard and not force:
            raise NoEvidence(state_dir, f"there are no endpoint records ({endpoints.path} does not exist: "
                                        "vnet-ipam's stateDir differs from the vnet plugin's, or vnet-ipam "
                                        "runs under another main plugin)")
        report.forced = f"no {endpoints.path}" if guard else ""
        return _rebuild_from(state_dir, {}, clock, report)
    try:
        with endpoints.held() as records:
            here = {k: r for k, r in records.items() if not _addressed_here(r, state_dir)}
            for name, rec in sorted(records.items()):
                why = _addressed_here(rec, state_dir)
                if why:
                    report.skipped.append(f"{name}: {why}")
            if not here:
                why = (f"none of the {len(records)} endpoint record(s) in {endpoints.path} was addressed by "
                       "this vnet-ipam state" if records else f"{endpoints.path} holds no endpoint record")
                if guard and not force:
                    raise NoEvidence(state_dir, why)
                report.forced = why if guard else ""
            return _rebuild_from(state_dir, here, clock, report)
    except CorruptState as err:
        raise CNIError(STATE_CORRUPT, f"cannot rebuild: {err.msg}") from None


def _guard_to_lift(state_dir: str) -> bool:
    """Whether ipam.json is unreadable or a corrupt copy awaits a rebuild (a read: nothing moves)."""
    store = IpamStore(state_dir)
    try:
        return bool(store.unrecovered(store.read()))
    except CorruptState:
        return True


def _rebuild_from(state_dir: str, records: dict, clock, report: RebuildReport) -> RebuildReport:
    store = IpamStore(state_dir)
    for attempt in (1, 2):
        try:
            with store.transaction() as state:
                _adopt(store, state, records, clock(), report)
            return report
        except CorruptState as err:  # ipam.json itself is unreadable: moved aside, start from empty
            if err.moved_to is None or attempt == 2:
                raise
    return report


def _adopt(store: IpamStore, state: IpamState, records: dict, now: float, report: RebuildReport) -> None:
    report.kept = len(state.allocations)
    holders = state.holders()
    for name, rec in sorted(records.items()):
        alloc = _endpoint_allocation(name, rec, state, now)
        if isinstance(alloc, str):
            report.skipped.append(alloc)
            continue
        mine = state.allocations.get(alloc.key)
        if mine is not None:
            if mine.ip != alloc.ip:
                report.conflicts.append(f"{alloc.key}: ipam.json holds {mine.address}, "
                                        f"its endpoint {alloc.address}; kept {mine.address}")
            continue
        other = next((holders[ip] for ip in alloc.ips if ip in holders), None)
        if other is not None:
            report.conflicts.append(f"{alloc.address}: claimed by {alloc.key} and held by "
                                    f"{other.key}; kept {other.key}")
            continue
        state.allocations[alloc.key] = alloc
        for ip in alloc.ips:
            holders[ip] = alloc
            state.cooling.pop(ip, None)
        report.adopted.append(allocation_key(alloc.network, alloc.container_id, alloc.ifname))
    pending = store.unrecovered(state)
    state.recovered = sorted(set(state.recovered) | set(pending))
    report.recovered = pending
