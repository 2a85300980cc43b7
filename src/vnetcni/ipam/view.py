"""What an operator sees of the pool (`vnetctl ipam`) and of the node's capacity (`vnetctl capacity`)."""

from __future__ import annotations

from ..cni._record import FrozenRecord
from .metadata import pools_from_metadata
from .model import IpamState, NodePool, iso
from .store import IpamStore

IN_USE, FREE, COOLING, QUARANTINED = "in use", "free", "cooling", "quarantined"


class AddressRow(FrozenRecord):
    __slots__ = ("address", "status", "owner", "pod", "since", "until")
    address: str
    status: str  # in use / free / cooling / quarantined
    owner: str  # network/containerId/ifName (the previous owner while cooling)
    pod: str  # namespace/name
    since: str  # allocated at, or released at while cooling
    until: str  # reusable after (cooling)

    def __init__(self, address: str, status: str, owner: str = "", pod: str = "", since: str = "",
                 until: str = "") -> None:
        self._set(address=address, status=status, owner=owner, pod=pod, since=since, until=until)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


def address_rows(state: IpamState, now: float) -> list[AddressRow]:
    """Every address the pool lists, then every quarantined one."""
    rows = []
    holders = state.holders()
    for ip in (ip for pool in state.pools for ip in pool.addresses):
        alloc = holders.get(ip)
        cooling = state.cooling.get(ip)
        if alloc is not None:
            rows.append(AddressRow(ip, IN_USE, alloc.key, alloc.pod, iso(alloc.allocated)))
        elif cooling is not None and cooling.reusable_after > now:
            rows.append(AddressRow(ip, COOLING, cooling.previous_owner, "", iso(cooling.released),
                                   iso(cooling.reusable_after)))
        else:
            rows.append(AddressRow(ip, FREE))
    listed = state.pool_ips()
    for alloc in sorted(state.quarantined(), key=lambda a: a.ip):
        for ip in alloc.ips:
            if ip not in listed:
                rows.append(AddressRow(ip, QUARANTINED, alloc.key, alloc.pod, iso(alloc.allocated)))
    return rows


def pool_report(store: IpamStore, state: IpamState, now: float) -> dict:
    """The whole picture as JSON-ready data."""
    rows = address_rows(state, now)
    counts = {s: sum(1 for r in rows if r.status == s) for s in (IN_USE, FREE, COOLING, QUARANTINED)}
    pending = store.unrecovered(state)
    def describe(pool: NodePool | None) -> dict | None:
        if pool is None:
            return None
        return {"subnet": pool.subnet, "gateway": pool.gateway, "primary": pool.primary,
                "mac": pool.mac, "size": len(pool.addresses), "source": state.pool_source,
                "fetchedAt": iso(state.fetched_at) if state.fetched_at is not None else None}

    return {
        "stateDir": store.state_dir,
        "pool": describe(state.pool),
        **({"pool6": describe(state.pool6)} if state.pool6 is not None else {}),
        "refresh": state.refresh.to_doc(),
        "counts": counts,
        "addresses": [r.to_dict() for r in rows],
        "corruptFiles": store.corrupt_files(),
        "needsRebuild": pending,
    }


class Capacity(FrozenRecord):
    __slots__ = ("secondary_addresses", "max_pods", "pool", "source", "pool6")
    secondary_addresses: int
    max_pods: int
    pool: NodePool
    source: str
    pool6: NodePool | None  # dual-stack: the IPv6 pool beside the IPv4 one

    def __init__(self, secondary_addresses: int, max_pods: int, pool: NodePool, source: str,
                 pool6: NodePool | None = None) -> None:
        self._set(secondary_addresses=secondary_addresses, max_pods=max_pods, pool=pool, source=source,
                  pool6=pool6)

    @property
    def per_family(self) -> dict[str, int]:
        """Secondary addresses per IP family ("IPv4": 30, "IPv6": 30)."""
        return {f"IPv{6 if ':' in p.subnet else 4}": len(p.addresses) for p in (self.pool, self.pool6) if p}

    def to_dict(self) -> dict:
        # maxPods as node bootstrap wants it: kubelet's flag and its config file's field
        out = {"secondaryAddresses": self.secondary_addresses, "maxPods": self.max_pods,
               "kubeletFlag": f"--max-pods={self.max_pods}", "kubeletConfig": {"maxPods": self.max_pods},
               "subnet": self.pool.subnet, "primary": self.pool.primary, "mac": self.pool.mac,
               "source": self.source, "perFamily": self.per_family}
        if self.pool6 is not None:
            out["subnet6"], out["primary6"] = self.pool6.subnet, self.pool6.primary
        return out


def node_capacity(source, mac: str | None = None) -> Capacity:
    """One pod per secondary address: kubelet's max-pods must not exceed it, or pods beyond it
    fail in ContainerCreating instead of staying Pending. (hostNetwork pods need no address but
    count against max-pods too, so this value can only err on the safe side.) Dual-stack: every
    pod needs one address of each family, so the smaller family bounds it."""
    pool, pool6 = pools_from_metadata(source.fetch(), mac)
    n = min(len(p.addresses) for p in (pool, pool6) if p is not None)
    return Capacity(secondary_addresses=n, max_pods=n, pool=pool, source=source.description, pool6=pool6)
