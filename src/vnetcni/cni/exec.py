"""Executing another CNI plugin, as a runtime or a delegating plugin does (libcni's invoke)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Mapping

from .errors import CNIError, DECODE_FAILURE, INTERNAL, PLUGIN_NOT_AVAILABLE


def find_plugin(ptype: str, path: tuple[str, ...] | list[str]) -> str:
    if not ptype or "/" in ptype or ptype in (".", ".."):
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"invalid plugin type {ptype!r}")
    for d in path:
        candidate = os.path.join(d, ptype)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(PLUGIN_NOT_AVAILABLE, f"failed to find plugin {ptype!r} in path {list(path)}")


def exec_plugin(binary: str, env: Mapping[str, str], stdin: bytes,
                timeout: float | None = 120.0) -> dict | None:
    """Run a plugin; its JSON answer, None for an empty one; its error object raised as CNIError."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    full_env.update(env)
    try:
        proc = subprocess.run([binary], input=stdin, env=full_env, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CNIError(INTERNAL, f"plugin {binary} timed out after {timeout} s") from None
    except OSError as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"cannot execute {binary}: {exc.strerror}") from None
    out = proc.stdout.strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            if isinstance(err, dict) and "code" in err:
                raise CNIError.from_dict(err)
        except ValueError:
            pass
        detail = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-500:]
        raise CNIError(INTERNAL, f"plugin {os.path.basename(binary)} failed (exit {proc.returncode})", detail)
    if not out:
        return None
    try:
        obj = json.loads(out)
    except ValueError:
        raise CNIError(DECODE_FAILURE, f"plugin {os.path.basename(binary)} printed invalid JSON",
                       out[:300].decode(errors="replace")) from None
    if not isinstance(obj, dict):
        raise CNIError(DECODE_FAILURE, f"plugin {os.path.basename(binary)} printed a non-object")
    return obj
