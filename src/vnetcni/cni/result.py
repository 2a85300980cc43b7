"""The CNI result model and its conversion between spec versions.

A Result holds everything 1.1.0 can say; `to_dict(version)` writes what that version carries
(0.3.x/0.4.0 add `ips[].version`; 1.1.0 adds interface mtu/socketPath/pciID and route
mtu/advmss/priority/table/scope) and `from_dict` reads a result of any supported version, so a
plugin answers in the version it was asked for and accepts a prevResult written in any of them.
"""

from __future__ import annotations

from . import versions
from ._record import Record
from .errors import CNIError, DECODE_FAILURE, INVALID_CONFIG

_ROUTE_EXTRAS = ("mtu", "advmss", "priority", "table", "scope")  # 1.1.0
_ipaddress = None


def _ip():
    """ipaddress, imported on first use: only reading a result needs it, building one does not."""
    global _ipaddress
    if _ipaddress is None:
        import ipaddress

        _ipaddress = ipaddress
    return _ipaddress


def _bad(msg: str) -> CNIError:
    return CNIError(INVALID_CONFIG, f"invalid result: {msg}")


def _opt_int(d: dict, key: str) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(f"{key} must be a non-negative integer")
    return v


def _opt_str(d: dict, key: str) -> str:
    v = d.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _bad(f"{key} must be a string")
    return v


def _opt_ip(d: dict, key: str) -> str:
    v = _opt_str(d, key)
    if v:
        try:
            _ip().ip_address(v)
        except ValueError:
            raise _bad(f"{key} {v!r:.100} is not an IP address") from None
    return v


class Interface(Record):
    __slots__ = ("name", "mac", "sandbox", "mtu", "socket_path", "pci_id")
    name: str
    mac: str
    sandbox: str
    mtu: int | None  # 1.1.0
    socket_path: str  # 1.1.0
    pci_id: str  # 1.1.0

    def __init__(self, name: str, mac: str = "", sandbox: str = "", mtu: int | None = None,
                 socket_path: str = "", pci_id: str = "") -> None:
        self.name = name
        self.mac = mac
        self.sandbox = sandbox
        self.mtu = mtu
        self.socket_path = socket_path
        self.pci_id = pci_id

    def to_dict(self, version: str) -> dict:
        d: dict = {"name": self.name}
        if self.mac:
            d["mac"] = self.mac
        if self.sandbox:
            d["sandbox"] = self.sandbox
        if versions.at_least(version, "1.1.0"):
            if self.mtu is not None:
                d["mtu"] = self.mtu
            if self.socket_path:
                d["socketPath"] = self.socket_path
            if self.pci_id:
                d["pciID"] = self.pci_id
        return d

    @classmethod
    def from_dict(cls, d: object) -> "Interface":
        if not isinstance(d, dict):
            raise _bad("interfaces entries must be objects")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("interface without a name")
        return cls(name=name, mac=_opt_str(d, "mac"), sandbox=_opt_str(d, "sandbox"),
                   mtu=_opt_int(d, "mtu"), socket_path=_opt_str(d, "socketPath"),
                   pci_id=_opt_str(d, "pciID"))


class IPConfig(Record):
    __slots__ = ("address", "gateway", "interface")
    address: str  # CIDR, e.g. "10.240.0.36/16"
    gateway: str
    interface: int | None  # index into Result.interfaces

    def __init__(self, address: str, gateway: str = "", interface: int | None = None) -> None:
        self.address = address
        self.gateway = gateway
        self.interface = interface

    @property
    def version(self) -> str:
        return "6" if ":" in self.address else "4"

    def to_dict(self, version: str) -> dict:
        d: dict = {}
        if not versions.at_least(version, "1.0.0"):
            d["version"] = self.version
        if self.interface is not None:
            d["interface"] = self.interface
        d["address"] = self.address
        if self.gateway:
            d["gateway"] = self.gateway
        return d

    @classmethod
    def from_dict(cls, d: object) -> "IPConfig":
        if not isinstance(d, dict):
            raise _bad("ips entries must be objects")
        addr = d.get("address")
        if not isinstance(addr, str):
            raise _bad("ips entry without an address")
        _, slash, prefix = addr.partition("/")
        if not slash or not (prefix.isascii() and prefix.isdigit()):
            raise _bad(f"ips address {addr!r:.100} is not ADDRESS/PREFIXLEN")
        try:
            family = _ip().ip_interface(addr).version
        except ValueError:
            raise _bad(f"ips address {addr!r:.100} is not a CIDR address") from None
        gw = _opt_ip(d, "gateway")
        if gw and (":" in gw) != (family == 6):
            raise _bad(f"gateway {gw!r:.100} is not in the family of {addr!r:.100}")
        declared = d.get("version")
        if declared is not None and str(declared) != str(family):
            raise _bad(f"ips entry {addr!r:.100} declares version {declared!r:.100}")
        return cls(address=addr, gateway=gw, interface=_opt_int(d, "interface"))


class Route(Record):
    __slots__ = ("dst", "gw") + _ROUTE_EXTRAS
    dst: str
    gw: str
    mtu: int | None  # the rest: 1.1.0
    advmss: int | None
    priority: int | None
    table: int | None
    scope: int | None

    def __init__(self, dst: str, gw: str = "", mtu: int | None = None, advmss: int | None = None,
                 priority: int | None = None, table: int | None = None,
                 scope: int | None = None) -> None:
        self.dst = dst
        self.gw = gw
        self.mtu = mtu
        self.advmss = advmss
        self.priority = priority
        self.table = table
        self.scope = scope

    def to_dict(self, version: str) -> dict:
        d: dict = {"dst": self.dst}
        if self.gw:
            d["gw"] = self.gw
        if versions.at_least(version, "1.1.0"):
            for key in _ROUTE_EXTRAS:
                v = getattr(self, key)
                if v is not None:
                    d[key] = v
        return d

    @classmethod
    def from_dict(cls, d: object) -> "Route":
        if not isinstance(d, dict):
            raise _bad("routes entries must be objects")
        dst = d.get("dst")
        if not isinstance(dst, str):
            raise _bad("route without a dst")
        try:
            _ip().ip_network(dst, strict=False)
        except ValueError:
            raise _bad(f"route dst {dst!r:.100} is not a network") from None
        return cls(dst=dst, gw=_opt_ip(d, "gw"), **{k: _opt_int(d, k) for k in _ROUTE_EXTRAS})


class DNS(Record):
    __slots__ = ("nameservers", "domain", "search", "options")
    nameservers: list[str]
    domain: str
    search: list[str]
    options: list[str]

    def __init__(self, nameservers: list[str] | None = None, domain: str = "",
                 search: list[str] | None = None, options: list[str] | None = None) -> None:
        self.nameservers = list(nameservers or [])
        self.domain = domain
        self.search = list(search or [])
        self.options = list(options or [])

    def to_dict(self) -> dict:
        d: dict = {}
        if self.nameservers:
            d["nameservers"] = list(self.nameservers)
        if self.domain:
            d["domain"] = self.domain
        if self.search:
            d["search"] = list(self.search)
        if self.options:
            d["options"] = list(self.options)
        return d

    @classmethod
    def from_dict(cls, d: object) -> "DNS":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise _bad("dns must be an object")

        def strs(key: str) -> list[str]:
            v = d.get(key)
            if v is None:
                return []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise _bad(f"dns.{key} must be a list of strings")
            return list(v)

        return cls(nameservers=strs("nameservers"), domain=_opt_str(d, "domain"),
                   search=strs("search"), options=strs("options"))


class Result(Record):
    __slots__ = ("interfaces", "ips", "routes", "dns")
    interfaces: list[Interface]
    ips: list[IPConfig]
    routes: list[Route]
    dns: DNS

    def __init__(self, interfaces: list[Interface] | None = None, ips: list[IPConfig] | None = None,
                 routes: list[Route] | None = None, dns: DNS | None = None) -> None:
        self.interfaces = list(interfaces or [])
        self.ips = list(ips or [])
        self.routes = list(routes or [])
        self.dns = DNS() if dns is None else dns

    def to_dict(self, version: str) -> dict:
        versions.require_supported(version)
        return {
            "cniVersion": version,
            "interfaces": [i.to_dict(version) for i in self.interfaces],
            "ips": [ip.to_dict(version) for ip in self.ips],
            "routes": [r.to_dict(version) for r in self.routes],
            "dns": self.dns.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: object) -> "Result":
        """Read a result (a prevResult, or a delegated IPAM's answer) of any supported version."""
        if not isinstance(d, dict):
            raise CNIError(DECODE_FAILURE, "result must be a JSON object")
        if "cniVersion" in d:
            versions.require_supported(d["cniVersion"])

        def items(key: str) -> list:
            v = d.get(key)
            if v is None:
                return []
            if not isinstance(v, list):
                raise _bad(f"{key} must be a list")
            return v

        res = cls(
            interfaces=[Interface.from_dict(x) for x in items("interfaces")],
            ips=[IPConfig.from_dict(x) for x in items("ips")],
            routes=[Route.from_dict(x) for x in items("routes")],
            dns=DNS.from_dict(d.get("dns")),
        )
        for ip in res.ips:
            if ip.interface is not None and not ip.interface < len(res.interfaces):
                # An IPAM result carries no interfaces; an index into nothing is dropped.
                if res.interfaces:
                    raise _bad(f"ips entry refers to interface {ip.interface}, "
                               f"only {len(res.interfaces)} listed")
                ip.interface = None
        return res


def convert(result: dict, to_version: str) -> dict:
    """Convert a result dict of any supported version to `to_version`."""
    return Result.from_dict(result).to_dict(to_version)
