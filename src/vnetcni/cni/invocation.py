"""One plugin invocation: the CNI_* environment and the configuration on stdin.

What each verb requires follows the spec (and libcni's skel): ADD and CHECK need a container
id, a netns and an interface name; DEL needs no netns (containerd's second DEL on sandbox
removal sends `CNI_NETNS=""`); GC needs CNI_PATH; VERSION and STATUS need only the verb.
"""

from __future__ import annotations

import os
from collections.abc import Mapping  # free: contextlib and threading load collections

from ._record import FrozenRecord
from . import fastjson as json  # json without `re` (plugin start-up)
from .errors import CNIError, DECODE_FAILURE, INVALID_CONFIG, INVALID_ENV

VERBS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
MAX_STDIN_BYTES = 1 << 20  # a network configuration is a few KiB; refuse absurd input
_IFNAME_MAX_BYTES = 15  # IFNAMSIZ (16) minus the terminating NUL

# Environment variables each verb cannot do without (SPEC.md, section 2).
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}


class Invocation(FrozenRecord):
    """What the runtime asked: verb, container, netns, interface, args, config bytes."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path", "stdin")
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: tuple[str, ...]
    stdin: bytes

    def __init__(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
                 args: dict[str, str] | None = None, path: tuple[str, ...] = (),
                 stdin: bytes = b"") -> None:
        self._set(command=command, container_id=container_id, netns=netns, ifname=ifname,
                  args={} if args is None else args, path=tuple(path), stdin=stdin)

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def ignore_unknown(self) -> bool:
        """CNI_ARGS' IgnoreUnknown: the runtime accepts that we skip keys we do not know."""
        return self.args.get("IgnoreUnknown", "").lower() in ("1", "true")

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
    """'K=V;K=V' in any order; empty segments are skipped, a later key wins.

    Keys are kept as sent (IgnoreUnknown, K8S_POD_NAME, ...); what to do with unknown ones is the
    handler's choice. A pair without '=' or with an empty key is an invalid-env error (code 4).
    """
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENV, f"invalid CNI_ARGS pair {pair!r:.100}: expected KEY=VALUE")
        out[key] = value
    return out


def valid_name(name: object) -> bool:
    """Container ids and network names: an ASCII letter or digit, then letters, digits, _ . -"""
    if not isinstance(name, str) or not name or not name.isascii():
        return False
    return name[0].isalnum() and all(c.isalnum() or c in "_.-" for c in name)


def valid_ifname(name: str) -> bool:
    """Linux's rules: 1..15 bytes, not '.' or '..', no '/', ':' or whitespace."""
    try:
        size = len(name.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return False
    return (0 < size <= _IFNAME_MAX_BYTES and name not in (".", "..")
            and not any(c in "/:" or c.isspace() or c == "\0" for c in name))


def read_invocation(env: Mapping[str, str] | None = None, stdin: bytes = b"") -> Invocation:
    """Validate the environment for the verb; which variables are required depends on it."""
    env = os.environ if env is None else env
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(INVALID_ENV, "CNI_COMMAND is not set")
    if command not in VERBS:
        raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND {command!r:.100}",
                       f"expected one of {', '.join(VERBS)}")
    if command != "VERSION" and len(stdin) > MAX_STDIN_BYTES:
        raise CNIError(DECODE_FAILURE, f"network configuration too large (more than "
                                       f"{MAX_STDIN_BYTES} bytes)")
    missing = [name for name in REQUIRED_ENV[command] if not env.get(name, "")]
    if missing:
        raise CNIError(INVALID_ENV, f"required environment variables missing for {command}: "
                                    f"{', '.join(missing)}")
    container_id = env.get("CNI_CONTAINERID", "")
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "DEL", "CHECK"):
        if not valid_name(container_id):
            raise CNIError(INVALID_ENV, f"invalid CNI_CONTAINERID {container_id!r:.100}",
                           "must start with a letter or digit, then letters, digits, _ . -")
        if not valid_ifname(ifname):
            raise CNIError(INVALID_ENV, f"invalid CNI_IFNAME {ifname!r:.100}",
                           "1..15 bytes, not '.' or '..', no '/', ':' or whitespace")
    raw_path = env.get("CNI_PATH", "")
    return Invocation(
        command=command,
        container_id=container_id,
        netns=env.get("CNI_NETNS", ""),
        ifname=ifname,
        args=parse_cni_args(env.get("CNI_ARGS", "")),
        path=tuple(p for p in raw_path.split(os.pathsep) if p),
        stdin=stdin,
    )


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def decode_json_object(data: bytes | str, what: str = "network configuration") -> dict:
    """Strict JSON (no NaN/Infinity, UTF-8 only) that must be an object; CNIError otherwise."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CNIError(DECODE_FAILURE, f"{what} is not valid UTF-8", str(exc)) from None
    if not data.strip():
        raise CNIError(DECODE_FAILURE, f"{what} is empty")
    try:
        obj = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise CNIError(DECODE_FAILURE, f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise CNIError(DECODE_FAILURE, f"{what} is not valid JSON", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise CNIError(INVALID_CONFIG, f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj
