"""CNI specification versions: which we speak and how they compare."""

from __future__ import annotations

from .errors import CNIError, INCOMPATIBLE_VERSION, INVALID_CONFIG

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]


def parse(version: object) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); anything else is an invalid-config error."""
    if not isinstance(version, str) or not version:
        raise CNIError(INVALID_CONFIG, "cniVersion must be a non-empty string", repr(version))
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 6 for p in parts):
        raise CNIError(INVALID_CONFIG, f"malformed cniVersion {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def require_supported(version: object) -> str:
    parse(version)
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config is {version!r}, plugin supports "
            f"{', '.join(SUPPORTED_VERSIONS)}",
        )
    return version  # type: ignore[return-value]


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def version_info() -> dict:
    """The VERSION verb's answer."""
    return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)}
