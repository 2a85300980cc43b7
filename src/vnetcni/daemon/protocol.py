"""The wire format between a front door and vnetd, simple enough for a 100-line C client.

request : b"VNET1\n" PLUGIN b"\n" NETNS_ID b"\n" (KEY=VALUE b"\n")* b"\n" STDIN-BYTES   (then EOF)
response: EXIT-CODE b"\n" STDOUT-BYTES                                                  (then EOF)
       or b"FALLBACK\n": vnetd will not serve this call (another namespace, unknown plugin);
          the front door then does the work in-process.

NETNS_ID is "<st_dev>:<st_ino>" of the caller's network namespace: vnetd only serves callers in
its own namespace (it configures the node it runs on). Only CNI_* variables are forwarded.
"""

from __future__ import annotations

import os

MAGIC = b"VNET1"
FALLBACK = b"FALLBACK\n"


class ProtocolError(ValueError):
    pass


def netns_id() -> str:
    st = os.stat("/proc/self/ns/net")
    return f"{st.st_dev}:{st.st_ino}"


def encode_request(plugin: str, env: dict[str, str], stdin: bytes, ns: str | None = None) -> bytes:
    lines = [MAGIC, plugin.encode(), (ns or netns_id()).encode()]
    for k, v in env.items():
        if k.startswith("CNI_"):
            if "\n" in k or "\n" in v or "=" in k:
                raise ProtocolError(f"cannot forward {k}: newline in the environment")
            lines.append(f"{k}={v}".encode())
    return b"\n".join(lines) + b"\n\n" + stdin


def decode_request(data: bytes) -> tuple[str, str, dict[str, str], bytes]:
    head, sep, stdin = data.partition(b"\n\n")
    if not sep:
        raise ProtocolError("request has no header terminator")
    lines = head.split(b"\n")
    if len(lines) < 3 or lines[0] != MAGIC:
        raise ProtocolError("not a vnetd request")
    env: dict[str, str] = {}
    for line in lines[3:]:
        k, eq, v = line.decode(errors="replace").partition("=")
        if not eq:
            raise ProtocolError(f"bad header line {line[:40]!r}")
        env[k] = v
    return lines[1].decode(errors="replace"), lines[2].decode(errors="replace"), env, stdin


def encode_response(code: int, stdout: bytes) -> bytes:
    return str(int(code)).encode() + b"\n" + stdout


def decode_response(data: bytes) -> tuple[bytes, int] | None:
    """(stdout, exit code), or None when vnetd declined the call (FALLBACK)."""
    if data == FALLBACK:
        return None
    first, sep, out = data.partition(b"\n")
    if not sep or not first.lstrip(b"-").isdigit():
        raise ProtocolError("truncated vnetd response")
    return out, int(first)
