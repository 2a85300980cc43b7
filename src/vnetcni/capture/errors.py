"""The capture tools' errors: one readable message, an optional hint, and a distinct exit code.

The CLI prints `error: <message>` (and the hint) on stderr and exits with the code; nothing in
this package lets a traceback reach the operator.
"""

from __future__ import annotations

# Exit codes of `vnetctl capture` / `vnetctl trace` (documented in their --help).
EXIT_FAILED = 1        # the capture itself failed (tcpdump died, interface vanished)
EXIT_BAD_INPUT = 2     # bad filter, bad address, bad option combination
EXIT_NOT_FOUND = 3     # unknown pod, or the pod runs on another node
EXIT_PERMISSION = 4    # not root / missing capabilities
EXIT_TOOL_MISSING = 5  # tcpdump (or nsenter) is not installed


class CaptureError(Exception):
    """An operator-facing failure of capture or trace."""

    def __init__(self, message: str, hint: str = "", exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class PodNotFound(CaptureError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, EXIT_NOT_FOUND)


class PodOnAnotherNode(CaptureError):
    def __init__(self, pod: str, node: str, here: str, fabric: str | None = None) -> None:
        super().__init__(f"pod {pod} runs on node {node}, not on {here}",
                         f"use --node {node}" + (f" --fabric {fabric}" if fabric else ""),
                         EXIT_NOT_FOUND)
        self.node = node


class BadInput(CaptureError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, EXIT_BAD_INPUT)


class NoPermission(CaptureError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, EXIT_PERMISSION)


class ToolMissing(CaptureError):
    def __init__(self, tool: str, package: str) -> None:
        super().__init__(f"{tool} is not installed (or not on PATH)",
                         f"install it: apt-get install {package}", EXIT_TOOL_MISSING)
