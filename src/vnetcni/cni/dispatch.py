"""Verb dispatch: the skeleton every plugin's handlers plug into.

`run(plugin, env, stdin)` returns (stdout bytes, exit code) and never raises: the runtime gets a
result, nothing, or the spec's error object, and nothing else. `main(plugin)` is the executable's
entry: while handlers run, file descriptor 1 points at stderr, so a stray print() (ours or a
library's, or a child's) cannot corrupt the one JSON document libcni reads from stdout.

Per-verb rules (SPEC.md and libcni's skel): CHECK needs cniVersion >= 0.4.0;
STATUS and GC need 1.1.0; DEL works without a netns and without a prevResult; VERSION ignores
what it cannot read on stdin; an unknown verb is code 4.
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Mapping  # free: contextlib and threading load collections

from . import versions
from . import fastjson as json  # json without `re` (plugin start-up)
from .config import NetConf, parse_netconf
from .errors import CNIError, INTERNAL, INVALID_CONFIG, INVALID_ENV, IO_FAILURE
from .invocation import MAX_STDIN_BYTES, Invocation, read_invocation
from .result import Result, convert

# GC's list of attachments that are still in use. libcni also sends the older spelling
# "cni.dev/attachments" (containernetworking/cni#1101); either is accepted.
VALID_ATTACHMENTS_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


class Plugin(abc.ABC):
    """One handler per verb; each raises CNIError to fail.

    Duck typing works too: dispatch only calls the methods. A plugin without `status` is always
    ready, one without `gc` has nothing to collect.
    """

    @abc.abstractmethod
    def add(self, inv: Invocation, conf: NetConf) -> Result | dict:
        """Attach the container; the result (a Result, or a result dict of any version)."""

    @abc.abstractmethod
    def delete(self, inv: Invocation, conf: NetConf) -> None:
        """Detach; idempotent, and must cope with no netns and no prevResult."""

    @abc.abstractmethod
    def check(self, inv: Invocation, conf: NetConf) -> None:
        """Verify the attachment (conf.previous_result(), which the runtime should send) holds."""

    def status(self, inv: Invocation, conf: NetConf) -> None:
        """Ready for ADD unless this raises (codes 50/51). Default: always ready."""

    def gc(self, inv: Invocation, conf: NetConf, valid: list[dict]) -> None:
        """Release whatever belongs to no attachment in `valid`. Default: nothing kept."""


def _encode(obj: dict) -> bytes:
    return (json.dumps(obj, indent=4) + "\n").encode()


def _error_version(stdin: bytes) -> str:
    """The version to write an error in: the config's, when it is one we speak."""
    if len(stdin) > MAX_STDIN_BYTES:
        return versions.LATEST
    try:
        v = json.loads(stdin.decode("utf-8")).get("cniVersion")
    except Exception:  # any unreadable input: the error itself says why
        return versions.LATEST
    return v if isinstance(v, str) and v in versions.SUPPORTED_VERSIONS else versions.LATEST


def _version_answer(stdin: bytes) -> dict:
    """VERSION needs nothing on stdin; a readable {"cniVersion"} picks the answer's version."""
    requested = None
    if stdin.strip() and len(stdin) <= MAX_STDIN_BYTES:
        try:
            obj = json.loads(stdin.decode("utf-8"))
            requested = obj.get("cniVersion") if isinstance(obj, dict) else None
        except (ValueError, RecursionError):
            pass
    return versions.version_info(requested if isinstance(requested, str) else None)


def _valid_attachments(conf: NetConf) -> list[dict]:
    for key in VALID_ATTACHMENTS_KEYS:
        if key in conf.raw:
            valid = conf.raw[key]
            break
    else:
        return []
    if valid is None:
        return []
    if not isinstance(valid, list) or not all(
        isinstance(a, dict) and isinstance(a.get("containerID"), str)
        and isinstance(a.get("ifname"), str) for a in valid
    ):
        raise CNIError(INVALID_CONFIG, f"{key} must be a list of {{containerID, ifname}} objects")
    return valid


def handle(plugin: Plugin, inv: Invocation) -> dict | None:
    """Run one verb; returns the object to print (or None). Raises CNIError."""
    if inv.command == "VERSION":
        return _version_answer(inv.stdin)
    conf = parse_netconf(inv.stdin)
    versions.require_verb(inv.command, conf.cni_version)
    if inv.command == "ADD":
        conf.previous_result()  # a chained ADD: refuse an unreadable prevResult up front
        result = plugin.add(inv, conf)
        if isinstance(result, dict):
            return convert(result, conf.cni_version)
        if not isinstance(result, Result):
            raise CNIError(INTERNAL, f"ADD handler returned {type(result).__name__}, not a Result")
        return result.to_dict(conf.cni_version)
    if inv.command == "DEL":
        plugin.delete(inv, conf)  # prevResult and netns may be missing: the handler copes
        return None
    if inv.command == "CHECK":
        # The runtime must send prevResult; a missing one is left to the handler, which may
        # check from its own records, but an unreadable one is refused here.
        conf.previous_result()
        plugin.check(inv, conf)
        return None
    if inv.command == "STATUS":
        status = getattr(plugin, "status", None)
        if status is not None:
            status(inv, conf)
        return None
    if inv.command == "GC":
        valid = _valid_attachments(conf)
        gc = getattr(plugin, "gc", None)
        if gc is not None:
            gc(inv, conf, valid)
        return None
    raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND {inv.command!r:.100}")  # read_invocation refuses first


def run(plugin: Plugin, env: Mapping[str, str], stdin: bytes) -> tuple[bytes, int]:
    """One invocation, start to finish: (what to print on stdout, exit code). Never raises."""
    try:
        inv = read_invocation(env, stdin)
        out = handle(plugin, inv)
        return (_encode(out) if out is not None else b""), 0
    except CNIError as err:
        return _encode(err.to_dict(_error_version(stdin))), 1
    except Exception as exc:  # a bug of ours: still a well-formed error, never a traceback on stdout
        return _internal_error(exc, stdin)


def error_answer(err: CNIError, stdin: bytes = b"") -> tuple[bytes, int]:
    """(stdout, exit code) for an error, in the configuration's cniVersion when we speak it."""
    return _encode(err.to_dict(_error_version(stdin))), 1


def _internal_error(exc: Exception, stdin: bytes) -> tuple[bytes, int]:
    """Code 999 for an unexpected exception; its traceback goes to stderr for the operator."""
    import traceback

    traceback.print_exc(file=sys.stderr)
    err = CNIError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}"[:500])
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


class _StdoutGuard:
    """Points fd 1 at stderr (else /dev/null) while handlers run; writes the answer at the end."""

    def __init__(self) -> None:
        import os

        self._os = os
        self._saved: int | None = None
        try:
            sys.stdout.flush()
            self._saved = os.dup(1)
        except (OSError, ValueError, AttributeError):
            return
        try:
            os.dup2(2, 1)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.close(null)
            except OSError:
                os.close(self._saved)
                self._saved = None

    def restore(self) -> None:
        try:
            sys.stdout.flush()  # whatever a handler printed goes to stderr, not the runtime
        except (OSError, ValueError, AttributeError):
            pass
        if self._saved is not None:
            self._os.dup2(self._saved, 1)
            self._os.close(self._saved)
            self._saved = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self._os.write(1, view):]
        except OSError:  # the runtime went away; nothing left to tell it
            pass


def serve(answer) -> int:
    """The executable's whole life around `answer(env, stdin) -> (stdout bytes, exit code)`.

    Reads stdin (bounded), keeps fd 1 pointed at stderr while `answer` runs, then writes only
    its output to the real stdout. Front doors that route to vnetd use this with their own
    `answer`; `main` uses it with `run`.
    """
    import os

    guard = _StdoutGuard()
    try:
        try:
            stdin = read_stdin(MAX_STDIN_BYTES)
        except (OSError, ValueError) as exc:
            err = CNIError(IO_FAILURE, f"cannot read the network configuration: {exc}")
            out, code = _encode(err.to_dict(versions.LATEST)), 1
        else:
            try:
                out, code = answer(os.environ, stdin)
            except Exception as exc:
                out, code = _internal_error(exc, stdin)
    finally:
        guard.restore()
    if out:
        guard.write(out)
    return code


def main(plugin: Plugin) -> int:
    """Entry point for a plugin executable: `sys.exit(main(MyPlugin()))`."""
    return serve(lambda env, stdin: run(plugin, env, stdin))
