"""The IPAM state and its document (`ipam.json`, kind `vnet-ipam`).

The document in its whole form (what `to_doc` gives and `from_doc` reads; ipam.json held it as
it is up to schemaVersion 1, and since schemaVersion 2 keeps it as a journal of changes to it,
state/journal.py, with the tables `allocations` and `cooling`):
```json
{"kind": "vnet-ipam", "schemaVersion": 2,
 "pool": {"subnet": "10.240.0.0/16", "gateway": "10.240.0.1", "primary": "10.240.0.35",
          "mac": "00:0d:3a:51:c4:90", "addresses": ["10.240.0.36", ...],
          "source": "http://168.63.129.16/...", "fetchedAt": "2024-05-01T12:00:00.000000+00:00"},
 "refresh": {"lastAttempt": "...", "lastOutcome": "...", "lastError": "", "source": "..."},
 "allocations": {"<network>/<containerId>/<ifName>": {
     "address": "10.240.0.36/16", "gateway": "10.240.0.1", "network": "azure",
     "containerId": "...", "ifName": "eth0", "podName": "web-0", "podNamespace": "default",
     "allocated": "..."}},
 "cooling": {"10.240.0.37": {"released": "...", "reusableAfter": "...", "previousOwner": "..."}},
 "recovered": ["ipam.json.corrupt-20240501T120000-4242"]}
```
`pool` is null until the metadata was read once. Dual-stack: when the NIC lists an IPv6 subnet
beside its IPv4 one, `pool6` holds that subnet's pool (same form as `pool`; absent or null on a
single-stack node) and every allocation also carries `address6` and `gateway6` (absent when the
owner got no IPv6 address, e.g. allocated before the node went dual-stack). An IPv6-only NIC
uses `pool` and `address` like an IPv4-only one. An allocation whose address the pool no longer
lists is *quarantined* (derived, not stored): it stays until released, and is never handed out.
`recovered` names the corrupt files a `vnetctl ipam --rebuild` has accounted for.
Times are ISO 8601 (UTC) on disk and epoch seconds in memory.

This module is on every plugin call, so it avoids `ipaddress`, `dataclasses` and `typing`
(records from cni._record; addresses are checked for shape here, for meaning by the parser).
"""

from __future__ import annotations

from datetime import datetime, timezone
from operator import attrgetter, itemgetter, methodcaller

from ..cni._record import FrozenRecord, Record

KIND = "vnet-ipam"
SCHEMA_VERSION = 2  # state/journal.py JOURNAL_VERSION (not imported: this module is on every call)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")


def from_iso(text: object) -> float:
    if not isinstance(text, str):
        raise ValueError(f"time {text!r} is not an ISO 8601 string")
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _opt_iso(t: float | None) -> str | None:
    return None if t is None else iso(t)


def _opt_from_iso(text: object) -> float | None:
    return None if text is None else from_iso(text)


def allocation_key(network: str, container_id: str, ifname: str) -> str:
    return f"{network}/{container_id}/{ifname}"


def ip_of(cidr: str) -> str:
    return cidr.split("/", 1)[0]


_HEX = frozenset("0123456789abcdefABCDEF:.")


def looks_like_ip(text: object) -> bool:
    """A cheap shape check (dotted quad, or hex groups with colons); the metadata parser does
    the real validation before anything reaches the document."""
    if not isinstance(text, str) or not text:
        return False
    if ":" in text:
        return len(text) <= 45 and set(text) <= _HEX
    parts = text.split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() and int(p) < 256 for p in parts)


def looks_like_cidr(text: object) -> bool:
    if not isinstance(text, str):
        return False
    ip, slash, prefix = text.partition("/")
    return bool(slash) and looks_like_ip(ip) and prefix.isascii() and prefix.isdigit() and int(prefix) <= 128


class NodePool(FrozenRecord):
    """What this node may hand out: the secondary addresses of one subnet of one NIC."""

    __slots__ = ("subnet", "gateway", "primary", "mac", "addresses")
    subnet: str  # "10.240.0.0/16"
    gateway: str  # the subnet's first host address
    primary: str  # the node's own address: never handed out
    mac: str  # "00:0d:3a:51:c4:90"
    addresses: tuple[str, ...]  # secondary addresses, numerically sorted, without prefix

    def __init__(self, subnet: str, gateway: str, primary: str, mac: str, addresses: tuple[str, ...]) -> None:
        self._set(subnet=subnet, gateway=gateway, primary=primary, mac=mac, addresses=tuple(addresses))

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.rpartition("/")[2])

    def cidr(self, address: str) -> str:
        return f"{address}/{self.prefixlen}"


class Allocation(FrozenRecord):
    """One owner's address(es). Frozen: a state's records are shared by the copies readers get
    (ipam/store.py), so a change replaces a record, never edits it."""

    __slots__ = ("address", "gateway", "network", "container_id", "ifname", "allocated",
                 "pod_name", "pod_namespace", "address6", "gateway6")
    address: str  # CIDR, e.g. "10.240.0.36/16"
    gateway: str
    address6: str  # dual-stack: the IPv6 address beside it (CIDR), else ""
    gateway6: str
    network: str
    container_id: str
    ifname: str
    allocated: float
    pod_name: str
    pod_namespace: str

    def __init__(self, address: str, gateway: str, network: str, container_id: str, ifname: str,
                 allocated: float, pod_name: str = "", pod_namespace: str = "", address6: str = "",
                 gateway6: str = "") -> None:
        self._set(address=address, gateway=gateway, address6=address6, gateway6=gateway6, network=network,
                  container_id=container_id, ifname=ifname, allocated=allocated, pod_name=pod_name,
                  pod_namespace=pod_namespace)

    @property
    def ip(self) -> str:
        return ip_of(self.address)

    @property
    def ips(self) -> tuple[str, ...]:
        """Every address it holds (no prefix): one, or one per family."""
        return (ip_of(self.address), ip_of(self.address6)) if self.address6 else (ip_of(self.address),)

    @property
    def addresses(self) -> tuple[tuple[str, str], ...]:
        """(CIDR, gateway) per family held."""
        first = ((self.address, self.gateway),)
        return first + ((self.address6, self.gateway6),) if self.address6 else first

    @property
    def key(self) -> str:
        return allocation_key(self.network, self.container_id, self.ifname)

    @property
    def pod(self) -> str:
        if not self.pod_name:
            return ""
        return f"{self.pod_namespace}/{self.pod_name}" if self.pod_namespace else self.pod_name

    def to_doc(self) -> dict:
        doc = {"address": self.address, "gateway": self.gateway, "network": self.network,
               "containerId": self.container_id, "ifName": self.ifname, "podName": self.pod_name,
               "podNamespace": self.pod_namespace, "allocated": iso(self.allocated)}
        if self.address6:
            doc.update(address6=self.address6, gateway6=self.gateway6)
        return doc

    @classmethod
    def from_doc(cls, d: object) -> "Allocation":
        if not isinstance(d, dict):
            raise ValueError("an allocation is not an object")
        address = _str(d, "address")
        if not looks_like_cidr(address):
            raise ValueError(f"allocation address {address!r} is not ADDRESS/PREFIX")
        gateway = _str(d, "gateway")
        if not looks_like_ip(gateway):
            raise ValueError(f"allocation gateway {gateway!r} is not an address")
        address6, gateway6 = _str(d, "address6", ""), _str(d, "gateway6", "")
        if address6 and not (looks_like_cidr(address6) and ":" in address6 and looks_like_ip(gateway6)):
            raise ValueError(f"allocation address6 {address6!r} / gateway6 {gateway6!r} is not IPv6")
        return cls(address=address, gateway=gateway, network=_str(d, "network"),
                   container_id=_str(d, "containerId"), ifname=_str(d, "ifName"),
                   allocated=from_iso(d.get("allocated")), pod_name=_str(d, "podName", ""),
                   pod_namespace=_str(d, "podNamespace", ""), address6=address6, gateway6=gateway6)


class Cooling(FrozenRecord):
    """A released address that should rest before it is handed out again (frozen, like Allocation)."""

    __slots__ = ("released", "reusable_after", "previous_owner")
    released: float
    reusable_after: float
    previous_owner: str

    def __init__(self, released: float, reusable_after: float, previous_owner: str = "") -> None:
        self._set(released=released, reusable_after=reusable_after, previous_owner=previous_owner)

    def to_doc(self) -> dict:
        return {"released": iso(self.released), "reusableAfter": iso(self.reusable_after),
                "previousOwner": self.previous_owner}

    @classmethod
    def from_doc(cls, d: object) -> "Cooling":
        if not isinstance(d, dict):
            raise ValueError("a cooling entry is not an object")
        return cls(released=from_iso(d.get("released")), reusable_after=from_iso(d.get("reusableAfter")),
                   previous_owner=_str(d, "previousOwner", ""))


class RefreshRecord(Record):
    """When the metadata was last asked (the rate limit), and how that went."""

    __slots__ = ("last_attempt", "last_outcome", "last_error", "source", "config")
    last_attempt: float | None
    last_outcome: float | None
    last_error: str
    source: str
    config: dict | None  # the ipam keys of the last attempt (how vnetd resumes refreshing at start)

    def __init__(self, last_attempt: float | None = None, last_outcome: float | None = None,
                 last_error: str = "", source: str = "", config: dict | None = None) -> None:
        self.last_attempt = last_attempt
        self.last_outcome = last_outcome
        self.last_error = last_error
        self.source = source
        self.config = config

    @property
    def in_flight(self) -> bool:
        """An attempt was claimed and has not recorded its outcome (yet)."""
        return self.last_attempt is not None and (self.last_outcome is None or self.last_outcome < self.last_attempt)

    def to_doc(self) -> dict:
        doc = {"lastAttempt": _opt_iso(self.last_attempt), "lastOutcome": _opt_iso(self.last_outcome),
               "lastError": self.last_error, "source": self.source}
        if self.config is not None:
            doc["config"] = dict(self.config)
        return doc

    @classmethod
    def from_doc(cls, d: object) -> "RefreshRecord":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError("refresh is not an object")
        config = d.get("config")
        if config is not None and not isinstance(config, dict):
            raise ValueError("refresh.config is not an object")
        return cls(last_attempt=_opt_from_iso(d.get("lastAttempt")),
                   last_outcome=_opt_from_iso(d.get("lastOutcome")),
                   last_error=_str(d, "lastError", ""), source=_str(d, "source", ""), config=config)


def _str(d: dict, key: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def _pool_to_doc(pool: NodePool, fetched_at: float | None, source: str) -> dict:
    return {"subnet": pool.subnet, "gateway": pool.gateway, "primary": pool.primary, "mac": pool.mac,
            "addresses": list(pool.addresses), "source": source, "fetchedAt": _opt_iso(fetched_at)}


def _pool_from_doc(d: object) -> tuple[NodePool, float | None, str]:
    if not isinstance(d, dict):
        raise ValueError("pool is not an object")
    subnet = _str(d, "subnet")
    if not looks_like_cidr(subnet):
        raise ValueError(f"pool subnet {subnet!r} is not a network")
    addresses = d.get("addresses")
    if not isinstance(addresses, list) or not all(looks_like_ip(a) for a in addresses):
        raise ValueError("pool.addresses is not a list of addresses")
    for key in ("gateway", "primary"):
        if not looks_like_ip(d.get(key)):
            raise ValueError(f"pool.{key} is not an address")
    pool = NodePool(subnet=subnet, gateway=d["gateway"], primary=d["primary"], mac=_str(d, "mac"),
                    addresses=tuple(addresses))
    return pool, _opt_from_iso(d.get("fetchedAt")), _str(d, "source", "")


_address, _address6, _before_slash = attrgetter("address"), attrgetter("address6"), itemgetter(0)


class IpamState(Record):
    __slots__ = ("pool", "pool6", "fetched_at", "pool_source", "refresh", "allocations", "cooling", "recovered")
    pool: NodePool | None
    pool6: NodePool | None  # dual-stack: the IPv6 pool beside an IPv4 `pool`
    fetched_at: float | None
    pool_source: str
    refresh: RefreshRecord
    allocations: dict[str, Allocation]
    cooling: dict[str, Cooling]  # address (no prefix) -> its rest
    recovered: list[str]

    def __init__(self) -> None:
        self.pool = None
        self.pool6 = None
        self.fetched_at = None
        self.pool_source = ""
        self.refresh = RefreshRecord()
        self.allocations = {}
        self.cooling = {}
        self.recovered = []

    @property
    def pools(self) -> tuple[NodePool, ...]:
        """Every pool known: one per IP family the NIC has (IPv4 first)."""
        return tuple(p for p in (self.pool, self.pool6) if p is not None)

    def pool_ips(self) -> set[str]:
        return {ip for p in self.pools for ip in p.addresses}

    def held_ips(self) -> set[str]:
        """Every address held (no prefix, both families): what holders() knows, as a set."""
        allocs = self.allocations.values()  # C loops: this runs on every ADD, over every allocation
        held = set(map(_before_slash, map(methodcaller("partition", "/"), map(_address, allocs))))
        held.update(map(_before_slash, map(methodcaller("partition", "/"), filter(None, map(_address6, allocs)))))
        return held

    def holders(self) -> dict[str, Allocation]:
        """Address (no prefix) -> the allocation holding it (both families)."""
        return {ip: a for a in self.allocations.values() for ip in a.ips}

    def quarantined(self) -> list[Allocation]:
        """Allocations holding an address the metadata no longer lists."""
        listed = self.pool_ips()
        return [a for a in self.allocations.values() if any(ip not in listed for ip in a.ips)]

    def fork(self) -> "IpamState":
        """A copy to change without changing this one: new tables and lists, the same (frozen)
        records."""
        state = IpamState()
        state.pool, state.pool6, state.fetched_at, state.pool_source = (
            self.pool, self.pool6, self.fetched_at, self.pool_source)
        r = self.refresh
        state.refresh = RefreshRecord(r.last_attempt, r.last_outcome, r.last_error, r.source,
                                      None if r.config is None else dict(r.config))
        state.allocations = dict(self.allocations)
        state.cooling = dict(self.cooling)
        state.recovered = list(self.recovered)
        return state

    def to_doc(self, tables: bool = True) -> dict:
        """The document; tables=False leaves out the two tables (allocations, cooling)."""
        doc = {
            "kind": KIND,
            "schemaVersion": SCHEMA_VERSION,
            "pool": None if self.pool is None else _pool_to_doc(self.pool, self.fetched_at, self.pool_source),
            **({"pool6": _pool_to_doc(self.pool6, self.fetched_at, self.pool_source)} if self.pool6 else {}),
            "refresh": self.refresh.to_doc(),
            "recovered": list(self.recovered),
        }
        if tables:
            doc["allocations"] = {k: a.to_doc() for k, a in sorted(self.allocations.items())}
            doc["cooling"] = {ip: c.to_doc() for ip, c in sorted(self.cooling.items())}
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> "IpamState":
        """Read a document; ValueError (with the reason) when its body has the wrong shape."""
        try:
            return cls._from_doc(doc)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None

    @classmethod
    def _from_doc(cls, doc: dict) -> "IpamState":
        state = cls()
        if doc.get("pool") is not None:
            state.pool, state.fetched_at, state.pool_source = _pool_from_doc(doc["pool"])
        if doc.get("pool6") is not None:
            state.pool6 = _pool_from_doc(doc["pool6"])[0]
        state.refresh = RefreshRecord.from_doc(doc.get("refresh"))
        allocations = doc.get("allocations") or {}
        if not isinstance(allocations, dict):
            raise ValueError("allocations is not an object")
        seen: dict[str, str] = {}
        for key, raw in allocations.items():
            alloc = Allocation.from_doc(raw)
            if alloc.key != key:
                raise ValueError(f"allocation {key!r} describes {alloc.key!r}")
            for ip in alloc.ips:
                if ip in seen:
                    raise ValueError(f"address {ip} is held by both {seen[ip]!r} and {key!r}")
                seen[ip] = key
            state.allocations[key] = alloc
        cooling = doc.get("cooling") or {}
        if not isinstance(cooling, dict):
            raise ValueError("cooling is not an object")
        for ip, raw in cooling.items():
            if not looks_like_ip(ip):
                raise ValueError(f"cooling entry {ip!r} is not an address")
            state.cooling[ip] = Cooling.from_doc(raw)
        recovered = doc.get("recovered") or []
        if not isinstance(recovered, list) or not all(isinstance(x, str) for x in recovered):
            raise ValueError("recovered is not a list of file names")
        state.recovered = list(recovered)
        return state
