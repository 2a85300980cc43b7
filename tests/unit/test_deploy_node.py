"""install-cni (atomic copy, skipped when identical), the conflist vnetd installs, the probe,
and uninstall: on plain directories and sockets, no root needed."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vnetcni.cli.main import app
from vnetcni.deploy import conflist, files
from vnetcni.deploy.binaries import install_binaries
from vnetcni.deploy.probe import ProbeError, ask_version
from vnetcni.deploy.uninstall import UninstallError, uninstall

runner = CliRunner()


@pytest.fixture
def image_bin(tmp_path):
    src = tmp_path / "image-cni-bin"
    src.mkdir()
    for name in ("vnet", "vnet-ipam"):
        (src / name).write_bytes(b"\x7fELF front door " + name.encode())
    return src


def test_install_cni_copies_then_skips_identical(image_bin, tmp_path):
    host = tmp_path / "opt-cni-bin"
    host.mkdir()
    first = install_binaries(str(image_bin), str(host))
    assert [o for _, o in first] == ["installed", "installed"]
    for name in ("vnet", "vnet-ipam"):
        assert (host / name).read_bytes() == (image_bin / name).read_bytes()
        assert (host / name).stat().st_mode & 0o777 == 0o755
    inode = (host / "vnet").stat().st_ino
    again = install_binaries(str(image_bin), str(host))
    assert [o for _, o in again] == ["unchanged", "unchanged"]
    assert (host / "vnet").stat().st_ino == inode  # not rewritten
    (image_bin / "vnet").write_bytes(b"\x7fELF a newer front door")
    upgraded = dict(install_binaries(str(image_bin), str(host)))
    assert upgraded[str(host / "vnet")] == "updated" and upgraded[str(host / "vnet-ipam")] == "unchanged"
    assert (host / "vnet").stat().st_ino != inode  # replaced by rename, never written in place
    assert sorted(os.listdir(host)) == ["vnet", "vnet-ipam"]  # no temp file left


def test_install_cni_refuses_a_missing_bin_dir(image_bin, tmp_path):
    with pytest.raises(FileNotFoundError, match="--create-dirs"):
        install_binaries(str(image_bin), str(tmp_path / "opt" / "cni" / "bni"))
    assert not (tmp_path / "opt").exists()
    install_binaries(str(image_bin), str(tmp_path / "opt" / "cni" / "bin"), create_dirs=True)
    assert (tmp_path / "opt" / "cni" / "bin" / "vnet").exists()


def test_install_cni_command(image_bin, tmp_path):
    host = tmp_path / "bin"
    host.mkdir()
    res = runner.invoke(app, ["install-cni", "--from", str(image_bin), "--cni-bin-dir", str(host)])
    assert res.exit_code == 0, res.output
    assert f"installed {host}/vnet" in res.output
    res = runner.invoke(app, ["install-cni", "--from", str(tmp_path / "nothing"), "--cni-bin-dir", str(host)])
    assert res.exit_code == 1 and "is this the vnet-cni image?" in res.output
    assert "Traceback" not in res.output


def test_place_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "vnet"

    def boom(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        files.place(target, b"data", 0o755)
    assert os.listdir(tmp_path) == []


CONFLIST = {"cniVersion": "1.0.0", "name": "vnet", "plugins": [
    {"type": "vnet", "bridge": "azure0", "stateDir": "/var/run/vnet",
     "ipam": {"type": "vnet-ipam", "stateDir": "/var/run/vnet", "metadataFile": "/etc/vnet/nic.xml"}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def _write(path: Path, doc) -> str:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_conflist_load_accepts_the_node_conflist(tmp_path):
    data, configs = conflist.load(_write(tmp_path / "c", CONFLIST), "/var/run/vnet")
    assert json.loads(data) == CONFLIST
    assert [c.metadata_file for c in configs] == ["/etc/vnet/nic.xml"]


@pytest.mark.parametrize("doc, message", [
    ("{not json", "not a valid conflist"),
    ({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}, "neither a vnet nor a vnet-ipam"),
    ({**CONFLIST, "plugins": [{**CONFLIST["plugins"][0], "stateDir": "/run/other"}]}, "stateDir points at"),
    ({**CONFLIST, "plugins": [{**CONFLIST["plugins"][0], "ipam": {"type": "vnet-ipam", "stateDir": "/x"}}]},
     "vnet-ipam's stateDir is /x"),
    ({**CONFLIST, "plugins": [{**CONFLIST["plugins"][0], "ipam": {"type": "vnet-ipam", "metadataUrl": "ftp://x"}}]},
     "bad vnet-ipam section"),
    ({**CONFLIST, "plugins": [{**CONFLIST["plugins"][0], "mode": "overlay"}]}, "bad vnet section: mode must be"),
    ({**CONFLIST, "plugins": [{**CONFLIST["plugins"][0], "bridge": "a-very-long-bridge-name"}]},
     "invalid bridge name"),
])
def test_conflist_load_refuses(tmp_path, doc, message):
    with pytest.raises(conflist.ConflistError, match=message):
        conflist.load(_write(tmp_path / "c", doc), "/var/run/vnet")


def test_conflist_load_refuses_a_missing_file(tmp_path):
    with pytest.raises(conflist.ConflistError, match="cannot read"):
        conflist.load(str(tmp_path / "none"), "/var/run/vnet")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="vnetd serves root callers only")


@pytest.fixture
def vnetd(tmp_path):
    """vnetd's real socket server (no plugin work: VERSION never reaches a handler)."""
    from vnetcni.daemon.server import Server

    server = Server(str(tmp_path), lambda name: object() if name in ("vnet", "vnet-ipam") else None)
    server.start()
    yield server
    server.stop(drain_seconds=2)


@needs_root
def test_probe_asks_vnetd_a_real_version_request(tmp_path, vnetd):
    assert "1.0.0" in ask_version(vnetd.socket_path)
    res = runner.invoke(app, ["probe", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0 and "vnetd answers" in res.output
    res = runner.invoke(app, ["probe", "--state-dir", str(tmp_path), "--conflist", str(tmp_path / "10-vnet.conflist")])
    assert res.exit_code == 1 and "not installed yet" in res.output


@needs_root
def test_probe_reports_a_declined_request(tmp_path, vnetd):
    vnetd._netns = "0:0"  # as if vnetd served another network namespace: it declines
    with pytest.raises(ProbeError, match="declined"):
        ask_version(vnetd.socket_path)
    res = runner.invoke(app, ["probe", "--state-dir", str(tmp_path)])
    assert res.exit_code == 1 and "declined" in res.output and "Traceback" not in res.output


def test_probe_fails_within_its_deadline_when_vnetd_hangs(tmp_path):
    import time

    wedged = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # accepts (backlog), never answers
    wedged.bind(str(tmp_path / "vnetd.sock"))
    wedged.listen(8)
    try:
        started = time.monotonic()
        with pytest.raises(ProbeError, match="did not answer within 0.3 s"):
            ask_version(str(tmp_path / "vnetd.sock"), 0.3)
        assert time.monotonic() - started < 5
    finally:
        wedged.close()


def test_probe_reports_no_socket_and_a_stale_one(tmp_path):
    with pytest.raises(ProbeError, match="no vnetd socket"):
        ask_version(str(tmp_path / "vnetd.sock"))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tmp_path / "vnetd.sock"))
    s.close()  # a socket file nobody listens on
    with pytest.raises(ProbeError, match="refused"):
        ask_version(str(tmp_path / "vnetd.sock"))


def _node(tmp_path: Path):
    bin_dir, conf_dir, state = tmp_path / "bin", tmp_path / "net.d", tmp_path / "state"
    for d in (bin_dir, conf_dir, state):
        d.mkdir()
    for name in ("vnet", "vnet-ipam", "bridge", "portmap"):
        (bin_dir / name).write_text(name)
    (bin_dir / ".vnet-cni").mkdir()
    (bin_dir / ".vnet-cni" / "vnet").write_text("entry")
    _write(conf_dir / "10-vnet.conflist", CONFLIST)
    _write(conf_dir / "05-other.conflist", {"cniVersion": "1.0.0", "name": "o", "plugins": [{"type": "bridge"}]})
    (state / "ipam.json").write_text("{}")
    (state / "ipam.json.lock").write_text("")
    (state / "endpoints.json").write_text("{}")
    (state / "operator-notes.txt").write_text("mine")
    (state / "vnetd-stats.json").write_text("{}")  # vnetd's counters
    (state / "in-process-calls").write_text("11")  # the fallback front door's count
    (state / "pending-deletes").mkdir()
    (state / "pending-deletes" / "abc.del").write_text("{}")
    return bin_dir, conf_dir, state


def test_uninstall_removes_only_what_is_ours(tmp_path):
    bin_dir, conf_dir, state = _node(tmp_path)
    prefix = tmp_path / "prefix"
    (prefix / "releases" / "0123abcd" / "vnetcni").mkdir(parents=True)
    (prefix / "releases" / "0123abcd" / "vnetcni" / "__init__.py").write_text("")
    res = runner.invoke(app, ["uninstall", "--cni-bin-dir", str(bin_dir), "--cni-conf-dir", str(conf_dir),
                              "--state-dir", str(state), "--prefix", str(prefix)])
    assert res.exit_code == 0, res.output
    assert not prefix.exists()
    assert sorted(os.listdir(bin_dir)) == ["bridge", "portmap"]
    assert os.listdir(conf_dir) == ["05-other.conflist"]
    assert len(os.listdir(state)) == 7  # state stays unless asked
    res = runner.invoke(app, ["uninstall", "--cni-bin-dir", str(bin_dir), "--cni-conf-dir", str(conf_dir),
                              "--state-dir", str(state), "--remove-state", "--prefix", str(prefix)])
    assert res.exit_code == 0, res.output
    assert os.listdir(state) == ["operator-notes.txt"]
    assert "kept" in res.output and "not vnet-cni state" in res.output
    assert "1 DEL(s) recorded while vnetd was down were never carried out" in res.output


def test_uninstall_keeps_state_while_vnetd_serves_it(tmp_path):
    bin_dir, conf_dir, state = _node(tmp_path)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(state / "vnetd.sock"))
    live.listen(1)
    try:
        with pytest.raises(UninstallError, match="vnetd still serves"):
            uninstall(str(bin_dir), str(conf_dir), "", str(state), remove_state=True)
        res = runner.invoke(app, ["uninstall", "--cni-bin-dir", str(bin_dir), "--cni-conf-dir", str(conf_dir),
                                  "--state-dir", str(state), "--remove-state", "--prefix", str(tmp_path / "p")])
        assert res.exit_code == 1 and "stop it" in res.output
    finally:
        live.close()
    assert (state / "ipam.json").exists()


def test_capacity_prints_what_node_bootstrap_needs(tmp_path):
    from support.cni import metadata_xml

    path = tmp_path / "nic.xml"
    path.write_text(metadata_xml("00:0d:3a:00:00:01", "10.240.0.4", [f"10.240.0.{i}" for i in range(5, 17)]))
    res = runner.invoke(app, ["capacity", "--metadata-file", str(path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "kubelet flag:        --max-pods=12" in lines
    assert "kubelet config file: maxPods: 12" in lines
    data = json.loads(runner.invoke(app, ["capacity", "--metadata-file", str(path), "--json"]).stdout)
    assert data["max_pods"] == 12 and data["kubelet_flag"] == "--max-pods=12"
    assert data["kubelet_config"] == {"maxPods": 12}  # kubelet's own field name, to paste as is


def test_a_conflist_that_sorts_first_is_reported(tmp_path):
    (tmp_path / "10-vnet.conflist").write_text("{}")
    assert conflist.shadowed_by(str(tmp_path), "10-vnet.conflist") == ""
    (tmp_path / "05-bridge.conf").write_text("{}")
    (tmp_path / "00-notes.txt").write_text("not a network")
    assert conflist.shadowed_by(str(tmp_path), "10-vnet.conflist") == "05-bridge.conf"
