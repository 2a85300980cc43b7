"""Network configurations and configuration lists (SPEC.md, "Configuration format")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import versions
from .errors import CNIError, INVALID_CONFIG
from .invocation import decode_json_object

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def _lower_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_lower_keys(v) for v in obj]
    return obj


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass(frozen=True)
class NetConf:
    """One plugin's configuration, as it arrives on stdin."""

    cni_version: str
    name: str
    type: str
    raw: dict = field(repr=False)

    @property
    def ipam(self) -> dict:
        return self.raw.get("ipam") or {}

    @property
    def dns(self) -> dict:
        return self.raw.get("dns") or {}

    @property
    def prev_result(self) -> dict | None:
        return self.raw.get("prevResult")

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def runtime_config(self, key: str, default: Any = None) -> Any:
        """A capability argument from runtimeConfig, key matched case-insensitively."""
        rc = self.raw.get("runtimeConfig") or {}
        want = key.lower()
        for k, v in rc.items():
            if str(k).lower() == want:
                return v
        return default

    def port_mappings(self) -> list[PortMapping]:
        """portMappings as containerd (HostPort…) or podman (hostPort…) send them."""
        out = []
        for entry in self.runtime_config("portMappings", []) or []:
            if not isinstance(entry, dict):
                raise CNIError(INVALID_CONFIG, "runtimeConfig.portMappings entries must be objects")
            e = _lower_keys(entry)
            try:
                out.append(
                    PortMapping(
                        host_port=int(e["hostport"]),
                        container_port=int(e["containerport"]),
                        protocol=str(e.get("protocol") or "tcp").lower(),
                        host_ip=str(e.get("hostip") or ""),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise CNIError(INVALID_CONFIG, f"invalid port mapping {entry!r}", str(exc)) from None
        return out


def parse_netconf(data: bytes | str | dict, *, need_type: bool = True) -> NetConf:
    obj = data if isinstance(data, dict) else decode_json_object(data)
    if "cniVersion" not in obj:
        raise CNIError(INVALID_CONFIG, "network configuration has no cniVersion")
    version = versions.require_supported(obj["cniVersion"])
    name = obj.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CNIError(INVALID_CONFIG, f"invalid or missing network name {name!r}")
    ptype = obj.get("type", "")
    if need_type and (not isinstance(ptype, str) or not ptype):
        raise CNIError(INVALID_CONFIG, "network configuration has no plugin type")
    for key in ("ipam", "dns", "runtimeConfig", "args", "capabilities"):
        if key in obj and not isinstance(obj[key], dict):
            raise CNIError(INVALID_CONFIG, f"{key!r} must be a JSON object")
    if "prevResult" in obj and obj["prevResult"] is not None and not isinstance(obj["prevResult"], dict):
        raise CNIError(INVALID_CONFIG, "prevResult must be a JSON object")
    return NetConf(cni_version=version, name=name, type=ptype or "", raw=obj)


@dataclass(frozen=True)
class ConfList:
    cni_version: str
    name: str
    plugins: tuple[dict, ...]
    disable_check: bool = False
    raw: dict = field(default_factory=dict, repr=False)

    def plugin_config(self, index: int, prev_result: dict | None = None,
                      runtime_config: dict | None = None) -> dict:
        """The stdin for plugin `index` of the chain, as libcni builds it."""
        conf = dict(self.plugins[index])
        conf["name"] = self.name
        conf["cniVersion"] = self.cni_version
        if prev_result is not None:
            conf["prevResult"] = prev_result
        caps = conf.get("capabilities") or {}
        if runtime_config and isinstance(caps, dict):
            rc = {k: v for k, v in runtime_config.items() if caps.get(k)}
            if rc:
                conf["runtimeConfig"] = rc
        return conf


def parse_conflist(data: bytes | str | dict) -> ConfList:
    obj = data if isinstance(data, dict) else decode_json_object(data, "network configuration list")
    if "cniVersion" not in obj:
        raise CNIError(INVALID_CONFIG, "configuration list has no cniVersion")
    version = versions.require_supported(obj["cniVersion"])
    name = obj.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CNIError(INVALID_CONFIG, f"invalid or missing network name {name!r}")
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CNIError(INVALID_CONFIG, "configuration list needs a non-empty 'plugins' array")
    for p in plugins:
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p.get("type"):
            raise CNIError(INVALID_CONFIG, "every plugin in the list needs a 'type'")
    return ConfList(
        cni_version=version,
        name=name,
        plugins=tuple(plugins),
        disable_check=bool(obj.get("disableCheck", False)),
        raw=obj,
    )
