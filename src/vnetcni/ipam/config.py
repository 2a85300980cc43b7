"""The `ipam` section of a network configuration, validated once into an IpamConfig.

```json
"ipam": {
  "type": "vnet-ipam",
  "metadataUrl": "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1",
  "metadataFile": "/etc/vnet/interfaces.xml",      # instead of metadataUrl, not with it
  "macAddress": "00:0d:3a:51:c4:90",               # which NIC; default: the primary one
  "refreshSeconds": 10, "metadataTimeoutSeconds": 2, "reuseCooldownSeconds": 30,
  "stateDir": "/var/run/vnet",                     # else the netconf's stateDir
  "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["168.63.129.16"]}
}
```
Every mistake is an INVALID_CONFIG error that names the key.
"""

from __future__ import annotations

import math
import os

from ..cni._record import FrozenRecord
from ..cni.config import NetConf
from ..cni.errors import CNIError, INVALID_CONFIG
from ..cni.result import DNS, Route
from ..node.layout import DEFAULT_STATE_DIR, LayoutError, NodeLayout
from .mac import normalize_mac

DEFAULT_METADATA_URL = "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1"
DEFAULT_REFRESH_SECONDS = 10.0
DEFAULT_TIMEOUT_SECONDS = 2.0
DEFAULT_COOLDOWN_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 60.0  # a plugin call must not hang on the metadata service


def _bad(msg: str) -> CNIError:
    return CNIError(INVALID_CONFIG, f"invalid ipam configuration: {msg}")


def _number(ipam: dict, key: str, default: float, *, positive: bool = False,
            maximum: float | None = None) -> float:
    value = ipam.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"{key} must be a number of seconds, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise _bad(f"{key} must be {'greater than' if positive else 'at least'} 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise _bad(f"{key} must be at most {maximum:g}, got {value!r}")
    return float(value)


def _optional_str(ipam: dict, key: str) -> str | None:
    value = ipam.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _state_dir(ipam: dict, netconf: dict) -> str:
    try:
        return NodeLayout.for_plugin("vnet-ipam", {**netconf, "ipam": ipam}).state_dir
    except LayoutError as err:
        raise _bad(str(err)) from None


def _metadata_url(ipam: dict) -> str | None:
    url = _optional_str(ipam, "metadataUrl")
    if url is not None and not url.lower().startswith(("http://", "https://")):
        raise _bad(f"metadataUrl must be an http:// or https:// URL, got {url!r}")
    return url


def _routes(ipam: dict) -> tuple[Route, ...] | None:
    raw = ipam.get("routes")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _bad(f"routes must be a list of {{dst, gw}} objects, got {raw!r}")
    routes = []
    for entry in raw:
        try:
            routes.append(Route.from_dict(entry))
        except CNIError as err:
            raise _bad(f"route {entry!r}: {err.msg.removeprefix('invalid result: ')}") from None
    return tuple(routes)


def _dns(ipam: dict) -> DNS:
    try:
        return DNS.from_dict(ipam.get("dns"))
    except CNIError as err:
        raise _bad(f"dns: {err.msg.removeprefix('invalid result: ')}") from None


class IpamConfig(FrozenRecord):
    __slots__ = ("metadata_url", "metadata_file", "mac", "refresh_seconds", "timeout_seconds",
                 "cooldown_seconds", "state_dir", "routes", "dns")
    metadata_url: str | None
    metadata_file: str | None
    mac: str | None  # normalized
    refresh_seconds: float
    timeout_seconds: float
    cooldown_seconds: float
    state_dir: str
    routes: tuple[Route, ...] | None  # None: a default route via the gateway
    dns: DNS

    def __init__(self, metadata_url: str | None = None, metadata_file: str | None = None,
                 mac: str | None = None, refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS, state_dir: str = DEFAULT_STATE_DIR,
                 routes: tuple[Route, ...] | None = None, dns: DNS | None = None) -> None:
        self._set(metadata_url=metadata_url, metadata_file=metadata_file, mac=mac,
                  refresh_seconds=refresh_seconds, timeout_seconds=timeout_seconds,
                  cooldown_seconds=cooldown_seconds, state_dir=state_dir, routes=routes,
                  dns=DNS() if dns is None else dns)

    @classmethod
    def from_sections(cls, ipam: object, netconf: dict | None = None) -> "IpamConfig":
        """Validate the ipam section (`netconf` supplies the top-level stateDir fallback)."""
        if not isinstance(ipam, dict):
            raise _bad("the ipam section must be a JSON object")
        netconf = netconf or {}
        url = _metadata_url(ipam)
        path = _optional_str(ipam, "metadataFile")
        if url and path:
            raise _bad("give metadataUrl or metadataFile, not both")
        if path is not None and not os.path.isabs(path):
            raise _bad(f"metadataFile must be an absolute path, got {path!r}")
        mac = _optional_str(ipam, "macAddress")
        if mac is not None:
            try:
                mac = normalize_mac(mac)
            except ValueError:
                raise _bad(f"macAddress {mac!r} is not a MAC address") from None
        return cls(
            metadata_url=url,
            metadata_file=path,
            mac=mac,
            refresh_seconds=_number(ipam, "refreshSeconds", DEFAULT_REFRESH_SECONDS),
            timeout_seconds=_number(ipam, "metadataTimeoutSeconds", DEFAULT_TIMEOUT_SECONDS,
                                    positive=True, maximum=MAX_TIMEOUT_SECONDS),
            cooldown_seconds=_number(ipam, "reuseCooldownSeconds", DEFAULT_COOLDOWN_SECONDS),
            state_dir=_state_dir(ipam, netconf),
            routes=_routes(ipam),
            dns=_dns(ipam),
        )

    @classmethod
    def from_netconf(cls, conf: NetConf) -> "IpamConfig":
        return cls.from_sections(conf.raw.get("ipam") or {}, conf.raw)

    @classmethod
    def coerce(cls, conf: "IpamConfig | NetConf | dict") -> "IpamConfig":
        """Accept an IpamConfig, a NetConf, a whole netconf dict (has 'ipam'), or an ipam dict."""
        if isinstance(conf, IpamConfig):
            return conf
        if isinstance(conf, NetConf):
            return cls.from_netconf(conf)
        if isinstance(conf, dict) and isinstance(conf.get("ipam"), dict):
            return cls.from_sections(conf["ipam"], conf)
        return cls.from_sections(conf)

    def default_source(self):
        """The configured MetadataSource (imported here: only a refresh needs one)."""
        from .sources import FileMetadataSource, HttpMetadataSource

        if self.metadata_file:
            return FileMetadataSource(self.metadata_file)
        return HttpMetadataSource(self.metadata_url or DEFAULT_METADATA_URL, self.timeout_seconds)

    def refresh_section(self) -> dict:
        """The ipam keys that say where and how to refresh this pool (kept in ipam.json, so
        vnetd can resume refreshing it at start, before any ADD names it again)."""
        out = {"stateDir": self.state_dir, "refreshSeconds": self.refresh_seconds,
               "metadataTimeoutSeconds": self.timeout_seconds, "reuseCooldownSeconds": self.cooldown_seconds}
        for key, value in (("metadataUrl", self.metadata_url), ("metadataFile", self.metadata_file),
                           ("macAddress", self.mac)):
            if value is not None:
                out[key] = value
        return out

    @property
    def source_description(self) -> str:
        return f"file {self.metadata_file}" if self.metadata_file else (self.metadata_url or DEFAULT_METADATA_URL)
