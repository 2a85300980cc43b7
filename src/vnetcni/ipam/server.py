"""A metadata service for one node: serves an interfaces file exactly as the NMAgent API does.

`GET /machine/plugins?comp=nmagent&type=getinterfaceinfov1` answers the file's bytes (verbatim,
so tests can serve garbage too); another query on that path is 400, another path 404. The file
is re-read whenever it changes, so a test or the fabric simulator can change a node's pool.

`serve(host, port, file)` runs it in a thread (port 0 picks one; `server.port` tells which) and
returns the server; `server.stop()` ends it. With `netns_path` the socket is bound inside that
network namespace (e.g. 168.63.129.16 inside a simulated node). `delay_seconds` and
`fail_status` simulate a slow or failing service. The server binds explicitly and never resolves
names: http.server's reverse lookup of the bind address stalls for seconds with no resolver.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

METADATA_PATH = "/machine/plugins"
METADATA_QUERY = {"comp": "nmagent", "type": "getinterfaceinfov1"}
METADATA_PATH_AND_QUERY = "/machine/plugins?comp=nmagent&type=getinterfaceinfov1"


class InterfacesFile:
    """The served file, re-read when its inode, size or mtime changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._data = b""

    def content(self) -> bytes | None:
        """The file's bytes, or None when it cannot be read."""
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                if stamp != self._stamp:
                    with open(self.path, "rb") as f:
                        self._data = f.read()
                    self._stamp = stamp
            except OSError:
                self._stamp = None
                return None
            return self._data


class MetadataRequestHandler(BaseHTTPRequestHandler):
    server: "MetadataServer"
    server_version = "vnet-metadata"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        if url.path != METADATA_PATH:
            self._answer(404, b"not found\n", "text/plain")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if any(query.get(k) != v for k, v in METADATA_QUERY.items()):
            self._answer(400, b"unsupported query: expected comp=nmagent&type=getinterfaceinfov1\n", "text/plain")
            return
        self.server.count_request()
        if self.server.delay_seconds > 0 and self.server.stopping.wait(self.server.delay_seconds):
            return  # stopping: drop the slow answer
        if self.server.fail_status is not None:
            self._answer(self.server.fail_status, b"simulated failure\n", "text/plain")
            return
        body = self.server.interfaces.content()
        if body is None:
            self._answer(503, f"cannot read {self.server.interfaces.path}\n".encode(), "text/plain")
            return
        self._answer(200, body, "application/xml")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout): nothing to tell it

    def address_string(self) -> str:
        return str(self.client_address[0])  # no reverse DNS

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class MetadataServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, interfaces_file: str, verbose: bool = False) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.interfaces = InterfacesFile(interfaces_file)
        self.verbose = verbose
        self.delay_seconds = 0.0
        self.fail_status: int | None = None
        self.stopping = threading.Event()
        self.requests = 0
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), MetadataRequestHandler)

    def server_bind(self) -> None:
        """Bind only: HTTPServer.server_bind would also call getfqdn() on the address."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METADATA_PATH_AND_QUERY}"

    def count_request(self) -> None:
        with self._count_lock:
            self.requests += 1

    def start(self) -> "MetadataServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"metadata-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()


def make_server(listen_host: str, port: int, interfaces_file: str, *, netns_path: str | None = None,
                verbose: bool = False) -> MetadataServer:
    """A bound, not yet serving server (inside `netns_path` when given)."""
    if netns_path:
        from ..dataplane.netns import entered

        with entered(netns_path):
            return MetadataServer(listen_host, port, interfaces_file, verbose)
    return MetadataServer(listen_host, port, interfaces_file, verbose)


def serve(listen_host: str, port: int, interfaces_file: str, *, netns_path: str | None = None,
          verbose: bool = False) -> MetadataServer:
    """Serve in a daemon thread; returns the running server (call `stop()` when done)."""
    return make_server(listen_host, port, interfaces_file, netns_path=netns_path, verbose=verbose).start()


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' -> (host, port); ValueError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write IPv6 addresses as [ADDR]:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: HOST must be an IP address (no name lookups)") from None
    return host, int(port_text)
