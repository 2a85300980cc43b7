"""SHA-256 for names derived from an attachment (lock files, host interface names).

hashlib loads OpenSSL (`_hashlib`): a few ms of every plugin start-up, and a plugin without vnetd
starts on every pod event. The interpreter's built-in SHA-256 module gives the same digest.
"""

from __future__ import annotations

try:
    from _sha2 import sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:  # a build without the built-in module
        from hashlib import sha256


def sha256_hex(data: bytes) -> str:
    return sha256(data).hexdigest()
