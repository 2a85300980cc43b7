"""Where the node's metadata comes from: the NMAgent HTTP API, a file, or a fake for tests.

Every source answers raw bytes or raises MetadataError; parsing happens in one place
(metadata.py), so a fake exercises the same hardened parser as the real thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

TYPE_CHECKING = False  # typing is not imported at run time: a plugin's ADD without vnetd refreshes
if TYPE_CHECKING:      # the pool in-process, and `typing` alone is ~5 ms of that
    from typing import Protocol
else:
    Protocol = object

from .config import DEFAULT_METADATA_URL
from .metadata import MAX_METADATA_BYTES, MetadataError

__all__ = ["DEFAULT_METADATA_URL", "MetadataSource", "HttpMetadataSource", "FileMetadataSource",
           "FakeMetadataSource"]


class MetadataSource(Protocol):
    """One node's view of its NIC addresses."""

    description: str

    def fetch(self) -> bytes:
        """The getinterfaceinfov1 XML, or MetadataError (down, slow, non-200, too large)."""
        ...


class HttpMetadataSource:
    """GET the metadata URL: no proxies, no redirects, a short timeout and a size limit."""

    def __init__(self, url: str = DEFAULT_METADATA_URL, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        self.description = url

    def fetch(self) -> bytes:
        # urllib.request is imported here, off the plugin start-up path (it pulls in http, email, ssl).
        import urllib.error
        import urllib.request

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # a 3xx is a non-200: a failed refresh
                return None

        # An empty ProxyHandler: the metadata service is link-local, never behind http_proxy.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        request = urllib.request.Request(self.url, headers={"Accept": "application/xml"})
        deadline = time.monotonic() + self.timeout
        try:
            with opener.open(request, timeout=self.timeout) as resp:
                if resp.status != 200:
                    raise MetadataError(f"{self.url} answered HTTP {resp.status}")
                return _read_bounded(resp, deadline, self.url)
        except MetadataError:
            raise
        except urllib.error.HTTPError as exc:
            raise MetadataError(f"{self.url} answered HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise MetadataError(f"cannot reach {self.url}: {exc.reason}") from None
        except TimeoutError:
            raise MetadataError(f"{self.url} did not answer within {self.timeout:g} s") from None
        except (OSError, ValueError) as exc:  # reset connections, bad status lines, ...
            raise MetadataError(f"{self.url}: {type(exc).__name__}: {exc}") from None


def _read_bounded(resp, deadline: float, url: str) -> bytes:
    """Read at most MAX_METADATA_BYTES, giving up once the overall deadline passed (a server
    trickling bytes cannot hold a refresh for longer than about twice the timeout)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = resp.read1(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_METADATA_BYTES:
            raise MetadataError(f"{url} answered more than {MAX_METADATA_BYTES} bytes")
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise MetadataError(f"{url} took longer than its timeout to answer")


class FileMetadataSource:
    """The same XML from a file, for nodes without a metadata service."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"file {path}"

    def fetch(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_METADATA_BYTES + 1)
        except OSError as exc:
            raise MetadataError(f"cannot read metadata file {self.path}: {exc.strerror}") from None
        if len(raw) > MAX_METADATA_BYTES:
            raise MetadataError(f"metadata file {self.path} is larger than {MAX_METADATA_BYTES} bytes")
        return raw


Answer = "bytes | Exception | Callable[[], bytes]"  # (an annotation only)


class FakeMetadataSource:
    """A source for tests: answers what it was given (bytes, an exception to raise, or a
    callable), and counts how often it was asked."""

    def __init__(self, answer: Answer = b"", description: str = "fake metadata") -> None:
        self.answer = answer
        self.description = description
        self.calls = 0

    def fetch(self) -> bytes:
        self.calls += 1
        answer = self.answer
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer()
        return answer
