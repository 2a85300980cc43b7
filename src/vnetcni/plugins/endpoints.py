"""The endpoint records: one durable entry per pod attachment, for DEL, CHECK, GC and operators.

`<stateDir>/endpoints.json` (kind `vnet-endpoints`, schemaVersion 2: a journal, state/journal.py,
whose table `endpoints` holds the records by key), one typed EndpointRecord per attachment,
validated on every read like the IPAM state: a malformed record makes the whole
document unreadable (code 101, naming the record and the field), never a KeyError.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from itertools import compress
from operator import attrgetter

from ..cni._record import FrozenRecord
from ..ipam.model import looks_like_cidr
from ..node.layout import DEFAULT_STATE_DIR, NodeLayout
from ..state.digest import sha256_hex
from ..state.durable import CorruptState
from ..state.journal import JOURNAL_VERSION, JournaledDocument

KIND = "vnet-endpoints"
SCHEMA_VERSION = JOURNAL_VERSION  # 1: one JSON document (still read; rewritten by the first change)


def endpoint_key(network: str, container_id: str, ifname: str) -> str:
    return f"{network}/{container_id}/{ifname}"


def host_ifname(network: str, container_id: str, ifname: str) -> str:
    """Deterministic host-side name: 'azv' + 11 hex characters of a hash of the attachment,
    so DEL finds the veth even without a record (15 characters, the kernel's limit)."""
    digest = sha256_hex(endpoint_key(network, container_id, ifname).encode())
    return "azv" + digest[:11]


_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    """This boot of the kernel (changes at every reboot; the same in every container)."""
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


# (attribute, JSON key, required) for the string fields, in the document's order.
_STRINGS = (("network", "network", True), ("container_id", "containerId", True), ("ifname", "ifName", True),
            ("host_ifname", "hostIfName", True), ("bridge", "bridge", False), ("mode", "mode", False),
            ("bridge_mac", "bridgeMac", False),
            ("mac", "mac", False), ("host_mac", "hostMac", False), ("gateway", "gateway", False),
            ("netns", "netns", False), ("pod_name", "podName", False), ("pod_namespace", "podNamespace", False),
            ("ipam", "ipam", False), ("ipam_state_dir", "ipamStateDir", False), ("created", "created", False),
            ("boot_id", "bootId", False), ("tearing_down", "tearingDown", False))
_OPTIONAL_KEYS = {"bridgeMac", "ipamStateDir", "bootId", "mode", "tearingDown"}  # written only when set (older records lack them)


class EndpointRecord(FrozenRecord):
    """What the vnet plugin made for one attachment (written once its interface exists).
    Frozen: the records are shared by the copies of the table readers get (see
    _EndpointsDocument), so a change replaces a record, never edits it."""

    __slots__ = tuple(a for a, _, _ in _STRINGS) + ("ips", "gateways", "routes", "dns", "mtu", "cooldown_seconds")
    network: str
    container_id: str
    ifname: str
    host_ifname: str  # the veth's node end ("azv…", derived from the attachment)
    bridge: str  # "" in transparent mode
    mode: str  # "bridge" or "transparent" ("" in records from before modes: bridge)
    bridge_mac: str
    mac: str  # the pod end
    host_mac: str
    gateway: str
    netns: str  # the pod's netns path, as the runtime gave it
    pod_name: str
    pod_namespace: str
    ipam: str  # the IPAM plugin's type ("" in records from before it was noted: vnet-ipam)
    ipam_state_dir: str  # where vnet-ipam allocated the address ("" for another IPAM)
    created: str  # ISO 8601
    boot_id: str  # the kernel boot the pod was attached in ("" in older records)
    tearing_down: str  # ISO 8601 time of a DEL answered before its veth was gone ("" otherwise):
    #   vnetd's reaper (daemon/reaper.py) removes the veth, then releases the address, then the record
    ips: list  # CIDR strings
    gateways: list  # the pod's gateway per IP family (gateway: the first)
    routes: list  # [{"dst": CIDR, "gw": address (optional)}]
    dns: dict
    mtu: int | None
    cooldown_seconds: float | None  # vnet-ipam's reuseCooldownSeconds for this address

    def __init__(self, network: str, container_id: str, ifname: str, host_ifname: str, bridge: str = "", *,
                 ips: Iterable[str] = (), gateways: Iterable[str] = (), routes: Iterable[dict] = (),
                 dns: dict | None = None,
                 mtu: int | None = None, cooldown_seconds: float | None = None, **strings: str) -> None:
        values = {attr: strings.pop(attr, "") for attr, _, required in _STRINGS if not required}
        values["bridge"] = bridge
        if strings:
            raise TypeError(f"EndpointRecord has no field(s) {', '.join(sorted(strings))}")
        self._set(network=network, container_id=container_id, ifname=ifname, host_ifname=host_ifname,
                  **values, ips=list(ips), gateways=list(gateways), routes=[dict(r) for r in routes],
                  dns=dict(dns or {}), mtu=mtu, cooldown_seconds=cooldown_seconds)

    @property
    def key(self) -> str:
        return endpoint_key(self.network, self.container_id, self.ifname)

    @property
    def pod(self) -> str:
        """namespace/name, or the container ID cut to 12 characters when the runtime named no pod."""
        return "/".join(x for x in (self.pod_namespace, self.pod_name) if x) or self.container_id[:12]

    @property
    def vnet_ipam(self) -> bool:
        return self.ipam in ("", "vnet-ipam")

    def to_dict(self) -> dict:
        out: dict = {}
        for attr, key, _ in _STRINGS:
            value = getattr(self, attr)
            if value or key not in _OPTIONAL_KEYS:
                out[key] = value
        out.update(ips=list(self.ips), routes=[dict(r) for r in self.routes], dns=dict(self.dns))
        if self.gateways:
            out["gateways"] = list(self.gateways)
        if self.mtu is not None:
            out["mtu"] = self.mtu
        if self.cooldown_seconds is not None:
            out["reuseCooldownSeconds"] = self.cooldown_seconds
        return out

    @classmethod
    def from_dict(cls, d: object) -> "EndpointRecord":
        """A record from its JSON form; ValueError naming the field when it has the wrong shape."""
        if not isinstance(d, dict):
            raise ValueError("an endpoint record is not an object")
        strings = {}
        for attr, key, required in _STRINGS:
            value = d.get(key, None if required else "")
            if value is None and not required:
                value = ""
            if not isinstance(value, str) or (required and not value):
                raise ValueError(f"{key} must be a{' non-empty' if required else ''} string, got {value!r}")
            strings[attr] = value
        ips = d.get("ips", [])
        if not isinstance(ips, list) or not all(looks_like_cidr(ip) for ip in ips):
            raise ValueError(f"ips must be a list of ADDRESS/PREFIX strings, got {ips!r}")
        gateways = d.get("gateways", [])
        if not isinstance(gateways, list) or not all(isinstance(g, str) and g for g in gateways):
            raise ValueError(f"gateways must be a list of addresses, got {gateways!r}")
        routes = d.get("routes", [])
        if not isinstance(routes, list) or not all(
                isinstance(r, dict) and looks_like_cidr(r.get("dst")) and isinstance(r.get("gw", ""), str)
                for r in routes):
            raise ValueError(f"routes must be a list of {{dst, gw}} objects, got {routes!r}")
        dns = d.get("dns") or {}
        if not isinstance(dns, dict):
            raise ValueError(f"dns must be an object, got {dns!r}")
        mtu = d.get("mtu")
        if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535):
            raise ValueError(f"mtu must be an integer between 68 and 65535, got {mtu!r}")
        cooldown = d.get("reuseCooldownSeconds")
        if cooldown is not None and (isinstance(cooldown, bool) or not isinstance(cooldown, (int, float))
                                     or not 0 <= cooldown < 1e9):
            raise ValueError(f"reuseCooldownSeconds must be a number of seconds, got {cooldown!r}")
        required = [strings.pop(a) for a in ("network", "container_id", "ifname", "host_ifname", "bridge")]
        return cls(*required, ips=ips, gateways=gateways, routes=routes, dns=dns, mtu=mtu, cooldown_seconds=cooldown, **strings)


_TEARING_DOWN = attrgetter("tearing_down")


class _EndpointsDocument(JournaledDocument):
    """endpoints.json read as {key: EndpointRecord}; its body is checked record by record (a bad
    one makes it unreadable). Kept as a journal (state/journal.py): a call appends the records it
    changed, and a process reads again only what another one wrote."""

    tables = ("endpoints",)

    def __init__(self, path: str) -> None:
        super().__init__(path, KIND, lambda: {"endpoints": {}})

    def _build(self, doc: dict) -> dict[str, EndpointRecord]:
        return records_of(doc)

    def _fork(self, table: dict[str, EndpointRecord]) -> dict[str, EndpointRecord]:
        return dict(table)

    def _head(self, table: dict[str, EndpointRecord]) -> dict:
        return {}

    def _tables(self, table: dict[str, EndpointRecord]) -> dict[str, dict]:
        return {"endpoints": table}

    def _row_doc(self, name: str, record: EndpointRecord) -> dict:
        return record.to_dict()


def records_of(doc: dict) -> dict[str, EndpointRecord]:
    table = doc.get("endpoints") or {}
    if not isinstance(table, dict):
        raise ValueError("endpoints is not an object")
    out = {}
    for key, raw in table.items():
        try:
            rec = EndpointRecord.from_dict(raw)
        except ValueError as exc:
            raise ValueError(f"endpoint {key!r}: {exc}") from None
        if rec.key != key:
            raise ValueError(f"endpoint {key!r} describes {rec.key!r}")
        out[key] = rec
    return out


class EndpointStore:
    def __init__(self, state_dir: str = DEFAULT_STATE_DIR) -> None:
        self.state_dir = state_dir
        self.path = NodeLayout(state_dir).endpoints_file
        self.doc = _EndpointsDocument(self.path)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def all(self) -> dict[str, EndpointRecord]:
        """Every record (a read: no side effects; CorruptState, code 101, when unreadable)."""
        return self.doc.read()

    def get(self, key: str) -> EndpointRecord | None:
        return self.all().get(key)

    def document(self) -> dict:
        """The records as one JSON document ({kind, schemaVersion, endpoints: {key: record}})."""
        return self.doc.document()

    def get_for_update(self, key: str) -> EndpointRecord | None:
        """For a caller about to write the records (ADD): an unreadable file is moved aside
        (kept on disk as evidence) and the attachment is looked up in the fresh, empty table."""
        try:
            return self.doc.read_for_update().get(key)
        except CorruptState as err:
            if err.moved_to is None:
                raise
            return None

    @contextlib.contextmanager
    def held(self) -> Iterator[dict[str, EndpointRecord]]:
        """The records read under their lock, held until the body ends (nobody adds or removes
        one meanwhile). A read: an unreadable file raises CorruptState and stays in place."""
        with self.doc.locked():
            yield self.all()

    def put(self, record: "EndpointRecord | dict") -> None:
        rec = record if isinstance(record, EndpointRecord) else EndpointRecord.from_dict(record)
        self._apply(lambda table: table.__setitem__(rec.key, rec))

    def remove(self, key: str) -> EndpointRecord | None:
        return self._apply(lambda table: table.pop(key, None))

    def remove_if_same(self, record: EndpointRecord) -> bool:
        """Remove the record only if the store still holds exactly this one (an ADD of the same
        attachment may have replaced it meanwhile); True if it was removed."""
        def change(table):
            if table.get(record.key) != record:
                return False
            del table[record.key]
            return True

        return self._apply(change)

    def mark_tearing_down(self, key: str, when: str) -> EndpointRecord | None:
        """Mark the attachment's record "tearing down" (durably; once: a repeated DEL keeps the
        first time). Returns the record, or None when there is none."""
        def change(table):
            rec = table.get(key)
            if rec is not None and not rec.tearing_down:
                rec = table[key] = rec.replace(tearing_down=str(when))  # a new record: never edited in place
            return rec

        return self._apply(change)

    def tearing_down(self) -> dict[str, EndpointRecord]:
        """The records of attachments whose DEL was answered before their veth was gone."""
        table = self.all()  # vnetd's reaper asks at every round: a C loop over the records
        return dict(compress(table.items(), map(_TEARING_DOWN, table.values())))

    def remove_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self._apply(lambda table: [table.pop(k, None) for k in keys])

    def _apply(self, change):
        try:
            return self.doc.apply(change)
        except CorruptState as err:
            if err.moved_to is None:
                raise
            # The unreadable file was just moved aside (kept as evidence); the records it held are
            # lost, the addresses stay allocated in vnet-ipam: carry on with a fresh table.
            return self.doc.apply(change)
