"""CNI specification versions: which we speak, how they compare, which verb needs which."""

from __future__ import annotations

from .errors import CNIError, INCOMPATIBLE_VERSION, INVALID_CONFIG

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]

# The first spec version that defines a verb (ADD and DEL exist in every version we speak).
VERB_MINIMUM = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}


def parse(version: object) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); anything else is an invalid-config error."""
    if not isinstance(version, str) or not version:
        raise CNIError(INVALID_CONFIG, "cniVersion must be a non-empty string", repr(version))
    parts = version.split(".")
    # isascii: str.isdigit() also accepts '²' or Arabic-Indic digits, which int() then rejects.
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts):
        raise CNIError(INVALID_CONFIG, f"malformed cniVersion {version!r:.100}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def require_supported(version: object) -> str:
    """The version itself when we speak it; code 1 for a well-formed one we do not."""
    parse(version)
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config is {version!r:.100}, plugin supports "
            f"{', '.join(SUPPORTED_VERSIONS)}",
        )
    return version  # type: ignore[return-value]


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def require_verb(verb: str, version: str) -> None:
    """CHECK needs 0.4.0, STATUS and GC need 1.1.0 (as libcni's skel): code 1 otherwise."""
    minimum = VERB_MINIMUM.get(verb)
    if minimum and not at_least(version, minimum):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version {version} does not allow {verb}",
                       f"{verb} needs cniVersion {minimum} or later")


def highest_supported(candidates: object) -> str | None:
    """The highest version in a 1.1.0 `cniVersions` list that we speak, or None."""
    if not isinstance(candidates, list) or not all(isinstance(v, str) for v in candidates):
        raise CNIError(INVALID_CONFIG, "cniVersions must be a list of strings")
    ours = [v for v in candidates if v in SUPPORTED_VERSIONS]
    return max(ours, key=parse) if ours else None


def version_info(requested: object = None) -> dict:
    """The VERSION verb's answer, written in the requested version when we speak it."""
    current = requested if requested in SUPPORTED_VERSIONS else LATEST
    return {"cniVersion": current, "supportedVersions": list(SUPPORTED_VERSIONS)}
