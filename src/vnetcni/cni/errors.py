"""The CNI error object and its well-known codes (SPEC.md, "Error").

A plugin reports failure by printing `{"cniVersion", "code", "msg", "details"}` on stdout and
exiting non-zero; codes below 100 are the spec's, 100 and up are the plugin's own.
"""

from __future__ import annotations

# Well-known error codes from the CNI specification.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50  # STATUS (1.1.0): cannot service ADD
LIMITED_CONNECTIVITY = 51  # STATUS (1.1.0): not available, existing pods may be affected

# vnet-cni's own codes (the spec reserves >= 100 for plugins).
NO_ADDRESS_AVAILABLE = 100
STATE_CORRUPT = 101
DATAPLANE_FAILURE = 102
CHECK_FAILED = 103
INTERNAL = 999


class CNIError(Exception):
    """An error a plugin reports to its runtime as the spec's error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = int(code)
        self.msg = str(msg)
        self.details = str(details)

    def to_dict(self, cni_version: str) -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "CNIError":
        """Rebuild an error another plugin (a delegated IPAM) printed."""
        code = data.get("code", INTERNAL)
        if isinstance(code, bool) or not isinstance(code, (int, str)):
            code = INTERNAL
        try:
            code = int(code)
        except ValueError:
            code = INTERNAL
        details = data.get("details")
        return cls(code, str(data.get("msg", "unknown error")), "" if details is None else str(details))

    def __repr__(self) -> str:
        return f"CNIError(code={self.code}, msg={self.msg!r}, details={self.details!r})"
