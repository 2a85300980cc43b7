"""Network configurations and configuration lists (SPEC.md, "Configuration format").

Capability arguments arrive in `runtimeConfig` with keys spelt as each runtime likes
(containerd: HostPort/ContainerPort/Protocol/HostIP, podman: hostPort/...), so they are matched
case-insensitively.
"""

from __future__ import annotations

from . import versions
from ._record import FrozenRecord
from .errors import CNIError, INCOMPATIBLE_VERSION, INVALID_CONFIG
from .invocation import decode_json_object, valid_name

_PROTOCOLS = ("tcp", "udp", "sctp")
_MISSING = object()


def _lookup(obj: dict, key: str, default: object = None) -> object:
    """obj[key] with the key matched case-insensitively (an exact match wins)."""
    if key in obj:
        return obj[key]
    want = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == want:
            return v
    return default


def _port(entry: dict, key: str) -> int:
    value = _lookup(entry, key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise CNIError(INVALID_CONFIG, f"invalid port mapping {entry!r:.200}",
                       f"{key} must be an integer between 1 and 65535")
    return value


def _flag(obj: dict, key: str) -> bool:
    """A boolean field; libcni also accepts the strings 'true' and 'false'."""
    value = obj.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CNIError(INVALID_CONFIG, f"{key!r} must be a boolean, got {value!r:.100}")


class PortMapping(FrozenRecord):
    """One entry of the portMappings capability."""

    __slots__ = ("host_port", "container_port", "protocol", "host_ip")
    host_port: int
    container_port: int
    protocol: str
    host_ip: str

    def __init__(self, host_port: int, container_port: int, protocol: str = "tcp",
                 host_ip: str = "") -> None:
        self._set(host_port=host_port, container_port=container_port, protocol=protocol,
                  host_ip=host_ip)

    @classmethod
    def from_dict(cls, entry: object) -> "PortMapping":
        if not isinstance(entry, dict):
            raise CNIError(INVALID_CONFIG, "runtimeConfig.portMappings entries must be objects")
        protocol = _lookup(entry, "protocol") or "tcp"
        if not isinstance(protocol, str) or protocol.lower() not in _PROTOCOLS:
            raise CNIError(INVALID_CONFIG, f"invalid port mapping {entry!r:.200}",
                           f"protocol must be one of {', '.join(_PROTOCOLS)}")
        host_ip = _lookup(entry, "hostIP") or ""
        if not isinstance(host_ip, str):
            raise CNIError(INVALID_CONFIG, f"invalid port mapping {entry!r:.200}", "hostIP must be a string")
        return cls(host_port=_port(entry, "hostPort"), container_port=_port(entry, "containerPort"),
                   protocol=protocol.lower(), host_ip=host_ip)


class NetConf(FrozenRecord):
    """One plugin's configuration, as it arrives on stdin."""

    __slots__ = ("cni_version", "name", "type", "raw")
    cni_version: str
    name: str
    type: str
    raw: dict

    def __init__(self, cni_version: str, name: str, type: str, raw: dict) -> None:  # noqa: A002
        self._set(cni_version=cni_version, name=name, type=type, raw=raw)

    def __repr__(self) -> str:  # raw may be large and hold secrets: keep it out of logs
        return f"NetConf(cni_version={self.cni_version!r}, name={self.name!r}, type={self.type!r})"

    @property
    def ipam(self) -> dict:
        return self.raw.get("ipam") or {}

    @property
    def dns(self) -> dict:
        return self.raw.get("dns") or {}

    @property
    def prev_result(self) -> dict | None:
        """The raw prevResult object (any supported version), or None."""
        return self.raw.get("prevResult")

    def previous_result(self):
        """prevResult as a Result (any supported version is accepted), or None when absent."""
        if self.prev_result is None:
            return None
        from .result import Result  # only chained ADD, CHECK and DEL need it

        return Result.from_dict(self.prev_result)

    def get(self, key: str, default: object = None) -> object:
        return self.raw.get(key, default)

    def runtime_config(self, key: str, default: object = None) -> object:
        """A capability argument from runtimeConfig, key matched case-insensitively."""
        return _lookup(self.raw.get("runtimeConfig") or {}, key, default)

    def port_mappings(self) -> list[PortMapping]:
        """portMappings as containerd (HostPort…) or podman (hostPort…) send them."""
        entries = self.runtime_config("portMappings")
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise CNIError(INVALID_CONFIG, "runtimeConfig.portMappings must be a list")
        return [PortMapping.from_dict(e) for e in entries]


def _network_name(obj: dict) -> str:
    name = obj.get("name")
    if not valid_name(name):
        raise CNIError(INVALID_CONFIG, f"invalid or missing network name {name!r:.100}",
                       "must start with a letter or digit, then letters, digits, _ . -")
    return name  # type: ignore[return-value]


def parse_netconf(data: bytes | str | dict, *, need_type: bool = True) -> NetConf:
    """Validate one plugin's configuration; CNIError (code 1, 6 or 7) for anything wrong."""
    obj = data if isinstance(data, dict) else decode_json_object(data)
    if "cniVersion" not in obj:
        raise CNIError(INVALID_CONFIG, "network configuration has no cniVersion")
    version = versions.require_supported(obj["cniVersion"])
    name = _network_name(obj)
    ptype = obj.get("type", "")
    if not isinstance(ptype, str) or (need_type and not ptype):
        raise CNIError(INVALID_CONFIG, "network configuration has no plugin type")
    for key in ("ipam", "dns", "runtimeConfig", "args", "capabilities"):
        if key in obj and not isinstance(obj[key], dict):
            raise CNIError(INVALID_CONFIG, f"{key!r} must be a JSON object")
    if obj.get("prevResult") is not None and not isinstance(obj["prevResult"], dict):
        raise CNIError(INVALID_CONFIG, "prevResult must be a JSON object")
    return NetConf(cni_version=version, name=name, type=ptype, raw=obj)


class ConfList(FrozenRecord):
    """A configuration list: the plugins a runtime runs in order for one network."""

    __slots__ = ("cni_version", "name", "plugins", "disable_check", "raw", "disable_gc")
    cni_version: str
    name: str
    plugins: tuple[dict, ...]
    disable_check: bool
    raw: dict
    disable_gc: bool

    def __init__(self, cni_version: str, name: str, plugins: tuple[dict, ...],
                 disable_check: bool = False, raw: dict | None = None,
                 disable_gc: bool = False) -> None:
        self._set(cni_version=cni_version, name=name, plugins=tuple(plugins),
                  disable_check=disable_check, raw={} if raw is None else raw,
                  disable_gc=disable_gc)

    def __repr__(self) -> str:
        return (f"ConfList(cni_version={self.cni_version!r}, name={self.name!r}, "
                f"plugins={[p.get('type') for p in self.plugins]!r})")

    def plugin_config(self, index: int, prev_result: dict | None = None,
                      runtime_config: dict | None = None) -> dict:
        """The stdin for plugin `index` of the chain, as libcni builds it.

        name and cniVersion come from the list; prevResult is injected when given; runtimeConfig
        holds only the capability arguments this plugin declares in `capabilities` (names matched
        case-insensitively, written as the plugin declared them) and is dropped otherwise, so a
        plugin never sees arguments it did not ask for.
        """
        conf = dict(self.plugins[index])
        conf["name"] = self.name
        conf["cniVersion"] = self.cni_version
        if prev_result is not None:
            conf["prevResult"] = prev_result
        conf.pop("runtimeConfig", None)
        caps = conf.get("capabilities")
        if runtime_config and isinstance(caps, dict):
            rc = {}
            for cap, enabled in caps.items():
                if enabled is True and isinstance(cap, str):
                    value = _lookup(runtime_config, cap, _MISSING)
                    if value is not _MISSING:
                        rc[cap] = value
            if rc:
                conf["runtimeConfig"] = rc
        return conf


def _list_version(obj: dict) -> str:
    """The highest version we speak among cniVersion and the 1.1.0 cniVersions list."""
    if "cniVersion" not in obj and "cniVersions" not in obj:
        raise CNIError(INVALID_CONFIG, "configuration list has no cniVersion")
    candidates: list[str] = []
    if "cniVersions" in obj:
        versions.highest_supported(obj["cniVersions"])  # raises unless a list of strings
        candidates += obj["cniVersions"]
    if "cniVersion" in obj:
        versions.parse(obj["cniVersion"])
        candidates.append(obj["cniVersion"])
    chosen = versions.highest_supported(candidates)
    if chosen is None:
        raise CNIError(INCOMPATIBLE_VERSION,
                       f"incompatible CNI versions: configuration list offers {candidates!r:.200}",
                       f"plugin supports {', '.join(versions.SUPPORTED_VERSIONS)}")
    return chosen


def parse_conflist(data: bytes | str | dict) -> ConfList:
    """Validate a configuration list; CNIError (code 1, 6 or 7) for anything wrong."""
    obj = data if isinstance(data, dict) else decode_json_object(data, "network configuration list")
    version = _list_version(obj)
    name = _network_name(obj)
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CNIError(INVALID_CONFIG, "configuration list needs a non-empty 'plugins' array")
    for p in plugins:
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p.get("type"):
            raise CNIError(INVALID_CONFIG, "every plugin in the list needs a 'type'")
        if "capabilities" in p and not isinstance(p["capabilities"], dict):
            raise CNIError(INVALID_CONFIG, f"capabilities of plugin {p['type']!r:.100} must be an object")
    return ConfList(cni_version=version, name=name, plugins=tuple(plugins),
                    disable_check=_flag(obj, "disableCheck"), raw=obj,
                    disable_gc=_flag(obj, "disableGC"))
