"""Rebuilding the allocations after `ipam.json` was found corrupt (`vnetctl ipam --rebuild`).

What a rebuild trusts: the vnet plugin's endpoint records (`endpoints.json` in the same state
directory; format in docs/architecture.md), written only after a pod's interface existed. It
never drops anything: allocations already in `ipam.json` are kept, records are added for the
addresses that endpoints hold, and an address claimed by two owners is reported and left with
the one `ipam.json` already names. Afterwards every `ipam.json.corrupt-*` file present is listed
in `recovered` (the files themselves stay for the operator), which lifts the ADD guard.

Pods attached by a main plugin that keeps no endpoint records (e.g. the reference `bridge`) cannot
be recovered from endpoints.json: their DEL still succeeds, and the operator can compare with
the corrupt file that was kept.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable

from ..cni._record import Record
from ..cni.errors import CNIError, STATE_CORRUPT
from ..node.layout import NodeLayout
from ..state.durable import CorruptState
from .model import Allocation, IpamState, allocation_key, from_iso
from .store import IpamStore

ENDPOINTS_KIND = "vnet-endpoints"
ENDPOINTS_SCHEMA = 1
OUR_IPAM = "vnet-ipam"


class RebuildReport(Record):
    __slots__ = ("adopted", "kept", "conflicts", "skipped", "recovered", "endpoints_found")
    adopted: list[str]  # allocations added from endpoint records
    kept: int  # allocations ipam.json already had
    conflicts: list[str]
    skipped: list[str]  # records that hold no vnet-ipam address
    recovered: list[str]  # corrupt files now accounted for
    endpoints_found: bool

    def __init__(self) -> None:
        self.adopted = []
        self.kept = 0
        self.conflicts = []
        self.skipped = []
        self.recovered = []
        self.endpoints_found = False

    def to_dict(self) -> dict:
        return {"adopted": self.adopted, "kept": self.kept, "conflicts": self.conflicts,
                "skipped": self.skipped, "recovered": self.recovered,
                "endpointsFound": self.endpoints_found}


def read_endpoints(state_dir: str) -> dict | None:
    """The endpoint records (None when there is no endpoints.json). Read only: never moved."""
    path = NodeLayout(state_dir).endpoints_file
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CNIError(STATE_CORRUPT, f"cannot rebuild: cannot read {path}: {exc.strerror}") from None
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise CNIError(STATE_CORRUPT, f"cannot rebuild: {path} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != ENDPOINTS_KIND or doc.get("schemaVersion") != ENDPOINTS_SCHEMA:
        raise CNIError(STATE_CORRUPT, f"cannot rebuild: {path} is not a {ENDPOINTS_KIND} "
                                      f"schema {ENDPOINTS_SCHEMA} document")
    endpoints = doc.get("endpoints") or {}
    if not isinstance(endpoints, dict):
        raise CNIError(STATE_CORRUPT, f"cannot rebuild: {path}: 'endpoints' is not an object")
    return endpoints


def _endpoint_allocation(name: str, rec: object, state: IpamState, now: float) -> Allocation | str:
    """The allocation an endpoint record implies, or why it implies none."""
    if not isinstance(rec, dict):
        return f"{name}: not an object"
    if rec.get("ipam", OUR_IPAM) != OUR_IPAM:
        return f"{name}: addressed by {rec.get('ipam')!r}, not {OUR_IPAM}"
    fields = [rec.get(k) for k in ("network", "containerId", "ifName")]
    if not all(isinstance(v, str) and v for v in fields):
        return f"{name}: no network/containerId/ifName"
    candidates = []
    for cidr in rec.get("ips") or []:
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
        created = from_iso(rec.get("created"))
    except ValueError:
        created = now
    address, gateway = _as_allocated(state, *candidates[0])
    pod_name, pod_namespace = rec.get("podName") or "", rec.get("podNamespace") or ""
    alloc = Allocation(address=address, gateway=gateway, network=fields[0], container_id=fields[1],
                       ifname=fields[2], allocated=created, pod_name=str(pod_name), pod_namespace=str(pod_namespace))
    if state.pool6 is not None:  # dual-stack: the record's address in the IPv6 pool's subnet
        subnet6 = ipaddress.ip_network(state.pool6.subnet)
        six = [c for c in candidates[1:] if c[0].version == 6 and c[0].ip in subnet6]
        if six:
            alloc.address6, alloc.gateway6 = _as_allocated(state, *six[0])
    return alloc


def _as_allocated(state: IpamState, iface, cidr: str) -> tuple[str, str]:
    """(address, gateway) as vnet-ipam hands them out: with the pool's prefix and gateway when a
    pool holds the address (a transparent-mode record says /32 or /128), else as recorded."""
    for pool in state.pools:
        if iface.ip in ipaddress.ip_network(pool.subnet):
            return pool.cidr(str(iface.ip)), pool.gateway
    return cidr, str(iface.network.network_address + 1)  # the subnet's first host, as the pool's


def rebuild(state_dir: str, clock: Callable[[], float] = time.time) -> RebuildReport:
    report = RebuildReport()
    endpoints = read_endpoints(state_dir)
    report.endpoints_found = endpoints is not None
    store = IpamStore(state_dir)
    try:
        store.read()  # a corrupt ipam.json is moved aside here; the rebuild starts from empty
    except CorruptState:
        pass
    with store.transaction() as state:
        now = clock()
        report.kept = len(state.allocations)
        holders = state.holders()
        for name, rec in sorted((endpoints or {}).items()):
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
    return report
