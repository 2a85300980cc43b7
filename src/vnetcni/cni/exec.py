"""Executing another CNI plugin, as a runtime or a delegating plugin does (libcni's invoke).

`subprocess` is imported only when a plugin is actually run: it is a heavy import and most
invocations of our own plugins never delegate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping  # free: contextlib and threading load collections

from . import fastjson as json  # json without `re` (plugin start-up)
from .errors import CNIError, DECODE_FAILURE, INTERNAL, INVALID_CONFIG, PLUGIN_NOT_AVAILABLE


def find_plugin(ptype: str, path: tuple[str, ...] | list[str]) -> str:
    """The executable for plugin type `ptype` in the CNI_PATH directories (code 50 if none)."""
    if (not isinstance(ptype, str) or not ptype or ptype in (".", "..")
            or any(c in ptype for c in "/\0")):
        raise CNIError(INVALID_CONFIG, f"invalid plugin type {ptype!r:.100}")
    for d in path:
        if not d or "\0" in d:
            continue
        candidate = os.path.join(d, ptype)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(PLUGIN_NOT_AVAILABLE, f"failed to find plugin {ptype!r:.100} in path {list(path)}")


def _decode(out: bytes) -> object:
    """JSON from a plugin's stdout, or ValueError."""
    try:
        return json.loads(out.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def exec_plugin(binary: str, env: Mapping[str, str], stdin: bytes,
                timeout: float | None = 120.0, command_prefix: tuple[str, ...] = ()) -> dict | None:
    """Run a plugin; its JSON answer, None for an empty one; its error object raised as CNIError.

    command_prefix runs it through a wrapper: ("ip", "netns", "exec", NODE) for a simulated node.

    The child gets our environment minus every CNI_* variable, plus `env`: a delegated plugin
    must never inherit a stale CNI_COMMAND or CNI_ARGS from its parent.
    """
    import subprocess

    name = os.path.basename(binary)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    full_env.update(env)
    try:
        proc = subprocess.run([*command_prefix, binary], input=stdin, env=full_env, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CNIError(INTERNAL, f"plugin {name} timed out after {timeout} s") from None
    except OSError as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"cannot execute {binary}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL byte in the binary path or in an environment value
        raise CNIError(INTERNAL, f"cannot execute {binary}: {exc}") from None
    out = proc.stdout.strip()
    if proc.returncode != 0:
        try:
            err = _decode(out)
        except ValueError:
            err = None
        if isinstance(err, dict) and "code" in err:
            raise CNIError.from_dict(err)
        detail = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-500:]
        raise CNIError(INTERNAL, f"plugin {name} failed (exit {proc.returncode})", detail)
    if not out:
        return None
    try:
        obj = _decode(out)
    except ValueError:
        raise CNIError(DECODE_FAILURE, f"plugin {name} printed invalid JSON",
                       out[:300].decode(errors="replace")) from None
    if not isinstance(obj, dict):
        raise CNIError(DECODE_FAILURE, f"plugin {name} printed a non-object")
    return obj
