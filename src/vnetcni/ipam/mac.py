"""MAC addresses as operators and platforms spell them, normalized to one form."""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")
# separator -> digits per group: Linux 00:0d:3a:51:c4:90, Windows 00-0D-3A-51-C4-90,
# Cisco 000d.3a51.c490, NMAgent 000D3A51C490
_FORMS = ((":", 2), ("-", 2), (".", 4), ("", 12))


def normalize_mac(text: object) -> str:
    """Any common MAC spelling -> '00:0d:3a:51:c4:90'. Raises ValueError otherwise."""
    if isinstance(text, str):
        mac = text.strip()
        for sep, width in _FORMS:
            groups = mac.split(sep) if sep else [mac]
            if len(groups) * width == 12 and all(len(g) == width and set(g) <= _HEX for g in groups):
                digits = "".join(groups).lower()
                return ":".join(digits[i:i + 2] for i in range(0, 12, 2))
    raise ValueError(f"{text!r} is not a MAC address")
