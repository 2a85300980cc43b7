"""One plugin invocation: the CNI_* environment and the configuration on stdin."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

from .errors import CNIError, DECODE_FAILURE, INVALID_CONFIG, INVALID_ENV

VERBS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
MAX_STDIN_BYTES = 1 << 20  # a network configuration is a few KiB; refuse absurd input
_IFNAME_MAX = 15


@dataclass(frozen=True)
class Invocation:
    """What the runtime asked: verb, container, netns, interface, args, config bytes."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()
    stdin: bytes = b""

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    def to_env(self) -> dict[str, str]:
        """The CNI_* variables that reproduce this invocation (for delegation and vnetd)."""
        env = {"CNI_COMMAND": self.command}
        if self.container_id:
            env["CNI_CONTAINERID"] = self.container_id
        env["CNI_NETNS"] = self.netns
        if self.ifname:
            env["CNI_IFNAME"] = self.ifname
        if self.args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in self.args.items())
        if self.path:
            env["CNI_PATH"] = os.pathsep.join(self.path)
        return env


def parse_cni_args(raw: str) -> dict[str, str]:
    """'K=V;K=V' in any order. Malformed pairs are an invalid-env error (as libcni's skel)."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENV, f"invalid CNI_ARGS pair {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _valid_ifname(name: str) -> bool:
    return 0 < len(name) <= _IFNAME_MAX and name not in (".", "..") and not any(
        c in name for c in "/: \t\n"
    )


def read_invocation(env: Mapping[str, str] | None = None, stdin: bytes = b"") -> Invocation:
    """Validate the environment for the verb; which variables are required depends on it."""
    env = os.environ if env is None else env
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(INVALID_ENV, "CNI_COMMAND is not set")
    if command not in VERBS:
        raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND {command!r}", f"expected one of {', '.join(VERBS)}")
    if len(stdin) > MAX_STDIN_BYTES:
        raise CNIError(DECODE_FAILURE, f"network configuration too large ({len(stdin)} bytes, limit {MAX_STDIN_BYTES})")
    container_id = env.get("CNI_CONTAINERID", "")
    netns = env.get("CNI_NETNS", "")
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "DEL", "CHECK"):
        missing = [k for k, v in (("CNI_CONTAINERID", container_id), ("CNI_IFNAME", ifname)) if not v]
        if command in ("ADD", "CHECK") and not netns:
            missing.append("CNI_NETNS")
        if missing:
            raise CNIError(INVALID_ENV, f"required environment variables missing: {', '.join(missing)}")
        if not _valid_ifname(ifname):
            raise CNIError(INVALID_ENV, f"invalid interface name {ifname!r}")
    raw_path = env.get("CNI_PATH", "")
    path = tuple(p for p in raw_path.split(os.pathsep) if p)
    return Invocation(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        args=parse_cni_args(env.get("CNI_ARGS", "")),
        path=path,
        stdin=stdin,
    )


def decode_json_object(data: bytes | str, what: str = "network configuration") -> dict:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CNIError(DECODE_FAILURE, f"{what} is not valid UTF-8", str(exc)) from None
    if not data.strip():
        raise CNIError(DECODE_FAILURE, f"{what} is empty")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CNIError(DECODE_FAILURE, f"{what} is not valid JSON", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise CNIError(INVALID_CONFIG, f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj
