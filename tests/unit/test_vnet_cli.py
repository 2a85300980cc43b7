"""vnetctl install and vnetctl endpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from vnetcni.cli.main import app
from vnetcni.plugins.endpoints import EndpointStore

runner = CliRunner()


def record(cid: str, ip: str) -> dict:
    return {"network": "vnet", "containerId": cid, "ifName": "eth0", "hostIfName": "azv0123456789a",
            "bridge": "azure0", "mac": "02:00:00:00:00:01", "ips": [ip], "gateway": "10.240.0.1",
            "routes": [], "dns": {}, "netns": "/run/netns/x", "podName": "web-1", "podNamespace": "shop",
            "created": "2026-11-22T00:00:00+00:00"}


def test_endpoints_table_and_json(tmp_path):
    EndpointStore(str(tmp_path)).put(record("c0ffee", "10.240.0.36/16"))
    res = runner.invoke(app, ["endpoints", "--state-dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "shop/web-1" in res.output and "10.240.0.36/16" in res.output
    res = runner.invoke(app, ["endpoints", "--state-dir", str(tmp_path), "--json"])
    assert json.loads(res.stdout)[0]["container_id"] == "c0ffee"


def test_endpoints_corrupt_state_is_a_readable_error_and_stays_in_place(tmp_path):
    (tmp_path / "endpoints.json").write_bytes(b"\x00\x00garbage")
    for command in ("endpoints", "status"):  # reads: no side effects
        res = runner.invoke(app, [command, "--state-dir", str(tmp_path)])
        assert res.exit_code == 1 and "unreadable" in res.output and "left in place" in res.output
        assert "Traceback" not in res.output
    assert not any(".corrupt-" in p.name for p in tmp_path.iterdir())
    assert (tmp_path / "endpoints.json").read_bytes() == b"\x00\x00garbage"


@pytest.mark.parametrize("compiled", [True, False])
def test_install_writes_working_front_doors_and_a_conflist(tmp_path, compiled):
    if compiled and not shutil.which("cc"):
        pytest.skip("no C compiler")
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    if os.geteuid() != 0:
        pytest.skip("vnetctl install copies the code into a root-owned prefix")
    args = ["install", "--cni-bin-dir", str(bin_dir), "--cni-conf-dir", str(conf_dir), "--create-dirs",
            "--prefix", str(tmp_path / "prefix"),
            "--metadata-url", "http://127.0.0.1:9/x", "--state-dir", "/var/run/vnet-test"]
    res = runner.invoke(app, args + ([] if compiled else ["--no-compile"]))
    assert res.exit_code == 0, res.output
    for name in ("vnet", "vnet-ipam"):
        exe = bin_dir / name
        assert os.access(exe, os.X_OK)
        assert (exe.read_bytes()[:4] == b"\x7fELF") == compiled
        # run it with a bare environment: no PATH, no virtualenv
        out = subprocess.run([str(exe)], input=b'{"cniVersion": "0.4.0"}', env={"CNI_COMMAND": "VERSION"},
                             capture_output=True, timeout=30)
        assert out.returncode == 0, out
        answer = json.loads(out.stdout)
        assert answer["cniVersion"] == "0.4.0" and "1.1.0" in answer["supportedVersions"]
        bad = subprocess.run([str(exe)], input=b"{nope", env={"CNI_COMMAND": "ADD"}, capture_output=True,
                             timeout=30)
        assert bad.returncode == 1 and json.loads(bad.stdout)["code"] in (4, 6)
    conflist = json.loads((conf_dir / "10-vnet.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["vnet", "portmap"]
    assert conflist["plugins"][0]["ipam"]["metadataUrl"] == "http://127.0.0.1:9/x"
