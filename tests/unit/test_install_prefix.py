"""vnetctl install (issue 13 #11): the plugins' code is copied into a root-owned prefix and the
installed entries import only from there; a missing bin/conf directory is refused unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vnetcni.cli.main import app
from vnetcni.plugins.install import UnsafeInstall, install

runner = CliRunner()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the prefix must be root-owned")


def test_refuses_a_missing_bin_dir(tmp_path):
    res = runner.invoke(app, ["install", "--cni-bin-dir", str(tmp_path / "opt/cni/bni"), "--no-compile",
                              "--prefix", str(tmp_path / "prefix")])
    assert res.exit_code == 1 and "does not exist (pass --create-dirs" in res.output
    assert not (tmp_path / "opt").exists() and not (tmp_path / "prefix").exists()


def test_refuses_a_missing_conf_dir(tmp_path):
    (tmp_path / "bin").mkdir()
    res = runner.invoke(app, ["install", "--cni-bin-dir", str(tmp_path / "bin"), "--cni-conf-dir",
                              str(tmp_path / "etc/cni/net.d"), "--no-compile", "--prefix", str(tmp_path / "p")])
    assert res.exit_code == 1 and "CNI conf directory" in res.output
    assert os.listdir(tmp_path / "bin") == []


def test_refuses_an_interpreter_others_can_replace(tmp_path, monkeypatch):
    unsafe = tmp_path / "shared"
    unsafe.mkdir()
    unsafe.chmod(0o777)  # world-writable, no sticky bit: anyone could swap the interpreter
    (unsafe / "python3").write_bytes(b"#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(unsafe / "python3"))
    (tmp_path / "bin").mkdir()
    with pytest.raises(UnsafeInstall, match="not safe to run as root"):
        install(str(tmp_path / "bin"), compile_front=False, prefix=str(tmp_path / "prefix"))
    assert not (tmp_path / "prefix").exists() and os.listdir(tmp_path / "bin") == []


@needs_root
def test_entries_import_only_from_the_prefix(tmp_path):
    bin_dir, prefix = tmp_path / "bin", tmp_path / "prefix"
    bin_dir.mkdir()
    res = runner.invoke(app, ["install", "--cni-bin-dir", str(bin_dir), "--no-compile", "--prefix", str(prefix)])
    assert res.exit_code == 0, res.output
    (release,) = (prefix / "releases").iterdir()
    assert sorted(p.name for p in release.iterdir()) == ["defusedxml", "pyroute2", "vnetcni"]
    checkout = str(Path(__file__).resolve().parents[2])
    for name in ("vnet", "vnet-ipam"):
        entry = (bin_dir / ".vnet-cni" / name).read_text()
        assert str(release) in entry and checkout not in entry and ".venv" not in entry
        assert entry.startswith(f"#!{os.path.realpath(sys.executable)} -IS")
    for f in release.rglob("*"):
        st = f.stat()
        assert st.st_uid == 0 and not st.st_mode & 0o022, f
    # the entry really runs from the copy: an ADD path module resolves inside the release
    probe = subprocess.run([os.path.realpath(sys.executable), "-IS", "-c",
                            f"import sys; sys.path[:0] = [{str(release)!r}]; import vnetcni.plugins.vnet, "
                            "vnetcni.ipam.plugin, vnetcni.dataplane.linux; print(vnetcni.__file__)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith(str(release))


@needs_root
def test_a_new_release_keeps_the_previous_one_only(tmp_path, monkeypatch):
    bin_dir, prefix = tmp_path / "bin", tmp_path / "prefix"
    bin_dir.mkdir()
    first = install(str(bin_dir), compile_front=False, prefix=str(prefix)).release
    assert install(str(bin_dir), compile_front=False, prefix=str(prefix)).release == first  # reused
    releases = []
    for n in range(3):  # three code changes: a fake package file that differs each time
        fake = tmp_path / f"pkg{n}" / "defusedxml"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(f"# version {n}\n")
        monkeypatch.syspath_prepend(str(fake.parent))
        monkeypatch.delitem(sys.modules, "defusedxml", raising=False)
        releases.append(install(str(bin_dir), compile_front=False, prefix=str(prefix)).release)
    assert len(set(releases)) == 3 and first not in releases
    left = sorted(str(p) for p in (prefix / "releases").iterdir())
    assert left == sorted(releases[-2:])  # the current one and the one before it
    assert releases[-1] in (bin_dir / ".vnet-cni" / "vnet").read_text()
