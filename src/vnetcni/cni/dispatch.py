"""Verb dispatch: the skeleton every plugin's handlers plug into.

`run(plugin, env, stdin)` returns (stdout bytes, exit code) and never raises: the runtime gets a
result, nothing, or the spec's error object, and nothing else is ever written to stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Mapping, Protocol

from . import versions
from .config import NetConf, parse_netconf
from .errors import CNIError, INCOMPATIBLE_VERSION, INTERNAL
from .invocation import Invocation, decode_json_object, read_invocation
from .result import Result


class Plugin(Protocol):
    """One handler per verb. ADD returns a Result; the others return None or raise CNIError."""

    def add(self, inv: Invocation, conf: NetConf) -> Result: ...
    def delete(self, inv: Invocation, conf: NetConf) -> None: ...
    def check(self, inv: Invocation, conf: NetConf) -> None: ...
    def status(self, inv: Invocation, conf: NetConf) -> None: ...
    def gc(self, inv: Invocation, conf: NetConf, valid: list[dict]) -> None: ...


def _error_version(stdin: bytes) -> str:
    """The version to write an error in: the config's, when it is one we speak."""
    try:
        v = json.loads(stdin).get("cniVersion")
    except Exception:
        return versions.LATEST
    return v if v in versions.SUPPORTED_VERSIONS else versions.LATEST


def _encode(obj: dict) -> bytes:
    return (json.dumps(obj, indent=4) + "\n").encode()


def _version_answer(stdin: bytes) -> dict:
    answer = versions.version_info()
    if stdin.strip():
        requested = decode_json_object(stdin).get("cniVersion")
        if requested in versions.SUPPORTED_VERSIONS:
            answer["cniVersion"] = requested
    return answer


def handle(plugin: Plugin, inv: Invocation) -> dict | None:
    """Run one verb; returns the object to print (or None). Raises CNIError."""
    if inv.command == "VERSION":
        return _version_answer(inv.stdin)
    conf = parse_netconf(inv.stdin)
    if inv.command == "ADD":
        result = plugin.add(inv, conf)
        return result.to_dict(conf.cni_version)
    if inv.command == "DEL":
        plugin.delete(inv, conf)
        return None
    if inv.command == "CHECK":
        if not versions.at_least(conf.cni_version, "0.4.0"):
            raise CNIError(INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, config is {conf.cni_version}")
        plugin.check(inv, conf)
        return None
    if inv.command in ("STATUS", "GC"):
        if not versions.at_least(conf.cni_version, "1.1.0"):
            raise CNIError(INCOMPATIBLE_VERSION, f"{inv.command} needs cniVersion 1.1.0, config is {conf.cni_version}")
        if inv.command == "STATUS":
            plugin.status(inv, conf)
        else:
            valid = conf.get("cni.dev/valid-attachments") or []
            if not isinstance(valid, list) or not all(isinstance(v, dict) for v in valid):
                raise CNIError(7, "cni.dev/valid-attachments must be a list of objects")
            plugin.gc(inv, conf, valid)
        return None
    raise CNIError(4, f"unknown CNI_COMMAND {inv.command!r}")  # read_invocation already refuses


def run(plugin: Plugin, env: Mapping[str, str], stdin: bytes) -> tuple[bytes, int]:
    try:
        inv = read_invocation(env, stdin)
        out = handle(plugin, inv)
        return (_encode(out) if out is not None else b""), 0
    except CNIError as err:
        return _encode(err.to_dict(_error_version(stdin))), 1
    except Exception as exc:  # a bug of ours: still a well-formed error, never a traceback on stdout
        import traceback

        traceback.print_exc(file=sys.stderr)
        err = CNIError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        return _encode(err.to_dict(_error_version(stdin))), 1


def read_stdin(limit: int) -> bytes:
    """Read at most limit+1 bytes so oversized input is refused without reading it all."""
    if sys.stdin is None or sys.stdin.closed:
        return b""
    try:
        if sys.stdin.isatty():
            return b""
    except (ValueError, OSError):
        return b""
    return sys.stdin.buffer.read(limit + 1)


def main(plugin: Plugin) -> int:
    """Entry point for a plugin executable."""
    import os

    from .invocation import MAX_STDIN_BYTES

    stdin = read_stdin(MAX_STDIN_BYTES)
    out, code = run(plugin, os.environ, stdin)
    if out:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    return code
