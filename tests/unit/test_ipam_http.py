"""The metadata HTTP server and the HTTP source, over loopback only: paths and queries, live
file changes, and every way a refresh can fail (down, slow, non-200, redirect, oversized)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from vnetcni.ipam.metadata import MAX_METADATA_BYTES, MetadataError, pool_from_metadata, render_node
from vnetcni.ipam.server import METADATA_PATH_AND_QUERY, parse_listen, serve
from vnetcni.ipam.sources import FileMetadataSource, HttpMetadataSource

XML = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 66)])


@pytest.fixture
def interfaces_file(tmp_path):
    path = tmp_path / "interfaces.xml"
    path.write_bytes(XML)
    return str(path)


@pytest.fixture
def server(interfaces_file):
    srv = serve("127.0.0.1", 0, interfaces_file)
    try:
        yield srv
    finally:
        srv.stop()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serves_the_file_exactly_at_the_nmagent_path(server):
    base = f"http://127.0.0.1:{server.port}"
    assert get(base + METADATA_PATH_AND_QUERY) == (200, XML)
    assert get(base + "/machine/plugins?type=getinterfaceinfov1&comp=nmagent")[0] == 200  # any order
    assert get(base + "/machine/plugins?comp=nmagent&type=other")[0] == 400
    assert get(base + "/machine/plugins")[0] == 400
    assert get(base + "/metadata/instance")[0] == 404
    assert server.requests == 2


def test_file_changes_are_served(server, interfaces_file):
    smaller = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", ["10.240.0.36"])
    tmp = interfaces_file + ".new"
    with open(tmp, "wb") as f:
        f.write(smaller)
    os.replace(tmp, interfaces_file)
    assert get(server.url) == (200, smaller)
    os.unlink(interfaces_file)
    assert get(server.url)[0] == 503


def test_bind_does_no_name_lookup(interfaces_file, monkeypatch):
    def no_dns(*args, **kwargs):
        raise AssertionError("the server must not resolve names")

    monkeypatch.setattr(socket, "getfqdn", no_dns)
    monkeypatch.setattr(socket, "gethostbyaddr", no_dns)
    srv = serve("127.0.0.1", 0, interfaces_file)
    try:
        assert get(srv.url)[0] == 200
    finally:
        srv.stop()


def test_http_source_reads_the_pool(server):
    pool = pool_from_metadata(HttpMetadataSource(server.url, 2).fetch())
    assert len(pool.addresses) == 30


def test_http_source_failures(server, interfaces_file):
    source = HttpMetadataSource(server.url, timeout=0.3)
    server.fail_status = 500
    with pytest.raises(MetadataError, match="HTTP 500"):
        source.fetch()
    server.fail_status = 302  # a redirect is not an answer
    with pytest.raises(MetadataError, match="HTTP 302"):
        source.fetch()
    server.fail_status = None
    server.delay_seconds = 3
    with pytest.raises(MetadataError, match="did not answer within|timed out"):
        source.fetch()
    server.delay_seconds = 0
    with open(interfaces_file, "wb") as f:
        f.write(b"<" * (MAX_METADATA_BYTES + 10))
    with pytest.raises(MetadataError, match="more than"):
        source.fetch()


def test_http_source_down():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MetadataError, match="cannot reach"):
        HttpMetadataSource(f"http://127.0.0.1:{port}{METADATA_PATH_AND_QUERY}", 1).fetch()


def test_http_source_ignores_proxy_settings(server, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert HttpMetadataSource(server.url, 2).fetch() == XML


def test_file_source(interfaces_file, tmp_path):
    assert FileMetadataSource(interfaces_file).fetch() == XML
    with pytest.raises(MetadataError, match="cannot read"):
        FileMetadataSource(str(tmp_path / "missing.xml")).fetch()
    big = tmp_path / "big.xml"
    big.write_bytes(b" " * (MAX_METADATA_BYTES + 1))
    with pytest.raises(MetadataError, match="larger than"):
        FileMetadataSource(str(big)).fetch()


@pytest.mark.parametrize("text,expected", [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:80", ("::1", 80)),
                                           ("0.0.0.0:0", ("0.0.0.0", 0))])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "localhost:80", "127.0.0.1:", "127.0.0.1:99999", "::1:80", ":80"])
def test_parse_listen_refuses(text):
    with pytest.raises(ValueError):
        parse_listen(text)


def test_vnetctl_metadata_serve_process(interfaces_file):
    """The blocking CLI command: serves, and ends cleanly on SIGTERM."""
    vnetctl = os.path.join(os.path.dirname(sys.executable), "vnetctl")
    proc = subprocess.Popen([vnetctl, "metadata", "serve", "--listen", "127.0.0.1:0", "--interfaces",
                             interfaces_file], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "serving" in line, line
        url = line.split(" at ", 1)[1].strip()
        assert get(url) == (200, XML)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
