"""The wire format between a front door and vnetd, simple enough for a small C client.

request (version 2):
    b"VNET2\\n"
    b"plugin=" PLUGIN b"\\n"
    b"netns=" NETNS_ID b"\\n"            the caller's own network namespace, "<st_dev>:<st_ino>"
    b"timeout-ms=" MS b"\\n"             the caller's deadline, counted from when it sends
    [b"pod-netns=fd\\n"]                 the descriptor of CNI_NETNS rides along (SCM_RIGHTS,
    [b"pod-netns=errno:" N b"\\n"]        with the first bytes), or the errno opening it gave
    (CNI_KEY=VALUE b"\\n")*              only CNI_* variables are forwarded
    b"\\n" STDIN-BYTES                    then EOF (shutdown of the writing side)
    Lower-case header keys are the protocol's; vnetd ignores ones it does not know.
request (version 1, still accepted): b"VNET1\\n" PLUGIN b"\\n" NETNS_ID b"\\n" (KEY=VALUE b"\\n")*
    b"\\n" STDIN-BYTES; no deadline (vnetd applies V1_TIMEOUT_SECONDS), no descriptor.
response: EXIT-CODE b"\\n" STDOUT-BYTES (then EOF)
       or b"FALLBACK\\n": vnetd will not serve this call (another namespace, unknown plugin);
          a front door with a fallback then does the work in-process.

vnetd only serves callers in its own network namespace (it configures the node it runs on), and
never opens a caller's CNI_NETNS by path (see dataplane/netns.py). A request whose deadline has
passed is one nobody waits for: Request.deadline / Request.expired() tell vnetd.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

MAGIC = b"VNET2"
MAGIC_V1 = b"VNET1"
FALLBACK = b"FALLBACK\n"
V1_TIMEOUT_SECONDS = 120.0  # what a version-1 front door waited
MAX_TIMEOUT_MS = 3_600_000
POD_NETNS_FD = "fd"


class ProtocolError(ValueError):
    pass


def netns_id() -> str:
    st = os.stat("/proc/self/ns/net")
    return f"{st.st_dev}:{st.st_ino}"


@dataclass
class Request:
    plugin: str
    netns: str  # the caller's network namespace id
    env: dict[str, str]
    stdin: bytes
    timeout: float  # seconds the caller waits, from when it sent
    received: float = field(default_factory=time.monotonic)  # time.monotonic() at receipt
    pod_netns: str = ""  # "fd", "errno:N", or "" (no CNI_NETNS, or a version-1 caller)
    version: int = 2

    @property
    def deadline(self) -> float:
        """time.monotonic() after which the caller no longer waits for the answer."""
        return self.received + self.timeout

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.deadline

    @property
    def wants_fd(self) -> bool:
        return self.pod_netns == POD_NETNS_FD

    @property
    def netns_errno(self) -> int:
        """The errno the caller got opening CNI_NETNS (0: none reported)."""
        kind, _, value = self.pod_netns.partition(":")
        return int(value) if kind == "errno" and value.isdigit() else 0


def encode_request(plugin: str, env: dict[str, str], stdin: bytes, *, timeout: float,
                   pod_netns: str = "", ns: str | None = None) -> bytes:
    lines = [MAGIC, b"plugin=" + plugin.encode(), b"netns=" + (ns or netns_id()).encode(),
             b"timeout-ms=%d" % timeout_ms(timeout)]
    if pod_netns:
        lines.append(b"pod-netns=" + pod_netns.encode())
    for k, v in env.items():
        if k.startswith("CNI_"):
            if "\n" in k or "\n" in v or "=" in k:
                raise ProtocolError(f"cannot forward {k}: newline in the environment")
            lines.append(f"{k}={v}".encode())
    return b"\n".join(lines) + b"\n\n" + stdin


def timeout_ms(seconds: float) -> int:
    """Milliseconds on the wire (the C front door rounds the same way)."""
    return max(1, int(seconds * 1000 + 0.5))


def decode_request(data: bytes, received: float | None = None) -> Request:
    head, sep, stdin = data.partition(b"\n\n")
    if not sep:
        raise ProtocolError("request has no header terminator")
    lines = head.split(b"\n")
    when = time.monotonic() if received is None else received
    if lines[0] == MAGIC_V1:
        if len(lines) < 3:
            raise ProtocolError("not a vnetd request")
        env = _env(lines[3:])
        return Request(lines[1].decode(errors="replace"), lines[2].decode(errors="replace"), env, stdin,
                       V1_TIMEOUT_SECONDS, when, version=1)
    if lines[0] != MAGIC:
        raise ProtocolError("not a vnetd request")
    meta = {}
    env_lines = []
    for line in lines[1:]:
        if line.startswith(b"CNI_"):
            env_lines.append(line)
            continue
        k, eq, v = line.decode(errors="replace").partition("=")
        if not eq:
            raise ProtocolError(f"bad header line {line[:40]!r}")
        meta[k] = v
    for key in ("plugin", "netns", "timeout-ms"):
        if key not in meta:
            raise ProtocolError(f"request without {key}")
    ms = meta["timeout-ms"]
    if not ms.isdigit() or not 0 < int(ms) <= MAX_TIMEOUT_MS:
        raise ProtocolError(f"bad timeout-ms {ms[:20]!r}")
    return Request(meta["plugin"], meta["netns"], _env(env_lines), stdin, int(ms) / 1000, when,
                   pod_netns=meta.get("pod-netns", ""))


def _env(lines: list[bytes]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in lines:
        k, eq, v = line.decode(errors="replace").partition("=")
        if not eq:
            raise ProtocolError(f"bad header line {line[:40]!r}")
        env[k] = v
    return env


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
