"""vnetd --conflist (issue 10): the conflist appears in the CNI conf directory only once vnetd
answers over its socket and the node's pool is known; a bad conflist stops vnetd at start with a
readable error; on SIGTERM the conflist stays (a restart or an upgrade keeps the node Ready)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.cni import metadata_xml
from support.statefiles import load_state

VNETD = str(Path(sys.executable).with_name("vnetd"))


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _conflist(state_dir: str, md: str) -> dict:
    return {"cniVersion": "1.0.0", "name": "vntnet", "plugins": [
        {"type": "vnet", "bridge": "vntbr0", "stateDir": state_dir,
         "ipam": {"type": "vnet-ipam", "stateDir": state_dir, "metadataFile": md, "refreshSeconds": 1}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}


def _vnetd(node: str, state_dir: str, src: Path, conf_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", node, VNETD, "--state-dir", state_dir, "--conflist", str(src),
                             "--cni-conf-dir", str(conf_dir), "--log-file", os.path.join(state_dir, "requests.log")],
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    proc.stderr.close()
    return err


def test_conflist_only_once_serving_and_the_pool_is_known(node_ns, tmp_path, state_dir):
    md = tmp_path / "interfaces.xml"  # not there yet: the metadata source fails
    src, conf_dir = tmp_path / "10-vnet.conflist.src", tmp_path / "net.d"
    conf_dir.mkdir()
    src.write_text(json.dumps(_conflist(state_dir, str(md))))
    target = conf_dir / "10-vnet.conflist"
    proc = _vnetd(node_ns, state_dir, src, conf_dir)
    try:
        sock = os.path.join(state_dir, "vnetd.sock")
        _wait(lambda: os.path.exists(sock) or proc.poll() is not None, 30, "vnetd's socket")
        assert proc.poll() is None
        # serving, but no pool: the node must stay NotReady (no conflist)
        _wait(lambda: bool(subprocess.run(["ip", "netns", "exec", node_ns, sys.executable, "-c",
                                           f"from vnetcni.deploy.probe import ask_version; ask_version({sock!r})"],
                                          capture_output=True).returncode == 0), 30, "vnetd to answer")
        time.sleep(2.5)  # several refresh attempts
        assert not target.exists()
        assert os.listdir(conf_dir) == []
        md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 40)]))
        _wait(target.exists, 30, "the conflist once the pool is learned")
        assert json.loads(target.read_text()) == json.loads(src.read_text())
        assert load_state(Path(state_dir, "ipam.json"))  # the pool came first
        inode = target.stat().st_ino
    finally:
        err = _stop(proc)
    assert "waiting for the node's address pool" in err and "Traceback" not in err
    assert target.exists() and target.stat().st_ino == inode  # SIGTERM leaves it in place
    assert not os.path.exists(os.path.join(state_dir, "vnetd.sock"))
    # a restart with the same settings leaves the file untouched (no rewrite, same inode)
    proc = _vnetd(node_ns, state_dir, src, conf_dir)
    try:
        _wait(lambda: os.path.exists(os.path.join(state_dir, "vnetd.sock")), 30, "vnetd again")
        time.sleep(1.5)
    finally:
        err = _stop(proc)
    assert f"conflist {target}: unchanged" in err
    assert target.stat().st_ino == inode


def test_a_conflist_that_misses_this_vnetd_is_refused_at_start(node_ns, tmp_path, state_dir):
    src, conf_dir = tmp_path / "c", tmp_path / "net.d"
    conf_dir.mkdir()
    src.write_text(json.dumps(_conflist("/var/run/vnet-elsewhere", "/x.xml")))
    proc = _vnetd(node_ns, state_dir, src, conf_dir)
    try:
        proc.wait(30)
    finally:
        err = _stop(proc)
    assert proc.returncode == 2
    assert "stateDir points at /var/run/vnet-elsewhere/vnetd.sock" in err and "Traceback" not in err
    assert os.listdir(conf_dir) == [] and not os.path.exists(os.path.join(state_dir, "vnetd.sock"))
    src.write_text(json.dumps(_conflist(state_dir, "/x.xml")))
    proc = _vnetd(node_ns, state_dir, src, tmp_path / "no-such-dir")
    try:
        proc.wait(30)
    finally:
        err = _stop(proc)
    assert proc.returncode == 2 and "CNI conf directory" in err and "does not exist" in err
