"""Finding the external tools a capture runs (tcpdump, nsenter) and checking privileges up front,
so the operator gets one clear sentence instead of tcpdump's or the kernel's."""

from __future__ import annotations

import os
import shutil
import subprocess

from .errors import BadInput, NoPermission, ToolMissing

CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
TCPDUMP_ENV = "VNETCNI_TCPDUMP"  # an explicit tcpdump binary (tests point it at a missing path)


def tcpdump_path() -> str:
    explicit = os.environ.get(TCPDUMP_ENV)
    found = explicit if explicit else shutil.which("tcpdump")
    if not found or not os.access(found, os.X_OK):
        raise ToolMissing("tcpdump", "tcpdump")
    return found


def nsenter_path() -> str:
    found = shutil.which("nsenter")
    if not found:
        raise ToolMissing("nsenter", "util-linux")
    return found


def effective_capabilities() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def require_privileges(enter_namespaces: bool) -> None:
    """Capturing needs CAP_NET_RAW; entering another network namespace needs CAP_SYS_ADMIN."""
    caps = effective_capabilities()
    missing = [name for bit, name, needed in (
        (CAP_NET_RAW, "CAP_NET_RAW", True),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN", enter_namespaces),
    ) if needed and not caps & (1 << bit)]
    if missing:
        raise NoPermission(
            "capturing packets needs root: you don't have permission to capture on a pod's "
            f"interface (missing {', '.join(missing)})",
            "run it as root, e.g. with sudo")


def check_filter(bpf_filter: str) -> None:
    """Compile the filter for an Ethernet link as tcpdump would, and fail with tcpdump's own
    message if it does not compile (before any capture is started)."""
    if not bpf_filter.strip():
        return
    proc = subprocess.run([tcpdump_path(), "-d", "-y", "EN10MB", bpf_filter],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()
        raise BadInput(f"filter {bpf_filter!r} is not valid: "
                       f"{message[-1] if message else 'tcpdump rejected it'}",
                       "the filter uses tcpdump's syntax (pcap-filter(7))")
