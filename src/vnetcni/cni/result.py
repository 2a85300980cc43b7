"""The CNI result model and its conversion between spec versions.

A Result holds everything 1.1.0 can say; `to_dict(version)` writes what that version carries
(0.3.x/0.4.0 add `ips[].version`; 1.1.0 adds interface mtu/socketPath/pciID and route
mtu/advmss/priority/table/scope) and `from_dict` reads a result of any supported version.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import versions
from .errors import CNIError, DECODE_FAILURE, INVALID_CONFIG


def _bad(msg: str) -> CNIError:
    return CNIError(INVALID_CONFIG, f"invalid result: {msg}")


def _opt_int(d: dict, key: str) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{key} must be an integer")
    return v


def _opt_str(d: dict, key: str) -> str:
    v = d.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _bad(f"{key} must be a string")
    return v


@dataclass
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None  # 1.1.0
    socket_path: str = ""  # 1.1.0
    pci_id: str = ""  # 1.1.0

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
    def from_dict(cls, d: dict) -> "Interface":
        if not isinstance(d, dict):
            raise _bad("interfaces entries must be objects")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("interface without a name")
        return cls(name=name, mac=_opt_str(d, "mac"), sandbox=_opt_str(d, "sandbox"),
                   mtu=_opt_int(d, "mtu"), socket_path=_opt_str(d, "socketPath"),
                   pci_id=_opt_str(d, "pciID"))


@dataclass
class IPConfig:
    address: str  # CIDR, e.g. "10.240.0.36/16"
    gateway: str = ""
    interface: int | None = None

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
    def from_dict(cls, d: dict) -> "IPConfig":
        if not isinstance(d, dict):
            raise _bad("ips entries must be objects")
        addr = d.get("address")
        if not isinstance(addr, str):
            raise _bad("ips entry without an address")
        try:
            iface = ipaddress.ip_interface(addr)
        except ValueError:
            raise _bad(f"ips address {addr!r} is not a CIDR address") from None
        if "/" not in addr:
            raise _bad(f"ips address {addr!r} has no prefix length")
        gw = _opt_str(d, "gateway")
        if gw:
            try:
                ipaddress.ip_address(gw)
            except ValueError:
                raise _bad(f"gateway {gw!r} is not an IP address") from None
        declared = d.get("version")
        if declared is not None and str(declared) != ("6" if iface.version == 6 else "4"):
            raise _bad(f"ips entry {addr!r} declares version {declared!r}")
        return cls(address=addr, gateway=gw, interface=_opt_int(d, "interface"))


@dataclass
class Route:
    dst: str
    gw: str = ""
    mtu: int | None = None  # 1.1.0
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    def to_dict(self, version: str) -> dict:
        d: dict = {"dst": self.dst}
        if self.gw:
            d["gw"] = self.gw
        if versions.at_least(version, "1.1.0"):
            for key in ("mtu", "advmss", "priority", "table", "scope"):
                v = getattr(self, key)
                if v is not None:
                    d[key] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Route":
        if not isinstance(d, dict):
            raise _bad("routes entries must be objects")
        dst = d.get("dst")
        if not isinstance(dst, str):
            raise _bad("route without a dst")
        try:
            ipaddress.ip_network(dst, strict=False)
        except ValueError:
            raise _bad(f"route dst {dst!r} is not a network") from None
        return cls(dst=dst, gw=_opt_str(d, "gw"), mtu=_opt_int(d, "mtu"),
                   advmss=_opt_int(d, "advmss"), priority=_opt_int(d, "priority"),
                   table=_opt_int(d, "table"), scope=_opt_int(d, "scope"))


@dataclass
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

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
            v = d.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise _bad(f"dns.{key} must be a list of strings")
            return list(v)

        return cls(nameservers=strs("nameservers"), domain=_opt_str(d, "domain"),
                   search=strs("search"), options=strs("options"))


@dataclass
class Result:
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

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
            v = d.get(key) or []
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
            if ip.interface is not None and not (0 <= ip.interface < len(res.interfaces)):
                # An IPAM result carries no interfaces; an index into nothing is dropped.
                if res.interfaces:
                    raise _bad(f"ips entry refers to interface {ip.interface}, "
                               f"only {len(res.interfaces)} listed")
                ip.interface = None
        return res


def convert(result: dict, to_version: str) -> dict:
    """Convert a result dict of any supported version to `to_version`."""
    return Result.from_dict(result).to_dict(to_version)
