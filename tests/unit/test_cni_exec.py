"""Running another plugin (delegated IPAM, the simulator's runtime): finding it, reading its answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vnetcni.cni.errors import (CNIError, DECODE_FAILURE, INTERNAL, INVALID_CONFIG, PLUGIN_NOT_AVAILABLE,
                                TRY_AGAIN_LATER)
from vnetcni.cni.exec import exec_plugin, find_plugin


def script(directory: Path, name: str, body: str, executable: bool = True) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def test_find_plugin_searches_the_path_in_order(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    script(first, "ipam", "exit 0", executable=False)  # not executable: skipped
    wanted = script(second, "ipam", "exit 0")
    script(second, "other", "exit 0")
    assert find_plugin("ipam", ["", str(tmp_path / "missing"), str(first), str(second)]) == str(wanted)


@pytest.mark.parametrize("ptype", ["", ".", "..", "../bin/sh", "a/b", "x\0y", None])
def test_find_plugin_refuses_types_that_are_not_file_names(tmp_path, ptype):
    with pytest.raises(CNIError) as info:
        find_plugin(ptype, [str(tmp_path)])  # type: ignore[arg-type]
    assert info.value.code == INVALID_CONFIG


def test_find_plugin_reports_a_missing_plugin_as_not_available(tmp_path):
    with pytest.raises(CNIError) as info:
        find_plugin("vnet-ipam", [str(tmp_path)])
    assert info.value.code == PLUGIN_NOT_AVAILABLE and "vnet-ipam" in info.value.msg


def test_exec_plugin_passes_stdin_and_only_the_given_cni_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CNI_ARGS", "STALE=1")  # must not leak into the child
    monkeypatch.setenv("VNT_KEEP", "kept")
    plugin = script(tmp_path, "echo", 'read -r conf; printf \'{"conf": %s, "cmd": "%s", "args": "%s", '
                                      '"keep": "%s"}\' "$conf" "$CNI_COMMAND" "$CNI_ARGS" "$VNT_KEEP"')
    answer = exec_plugin(str(plugin), {"CNI_COMMAND": "ADD"}, b'{"x": 1}\n')
    assert answer == {"conf": {"x": 1}, "cmd": "ADD", "args": "", "keep": "kept"}


def test_exec_plugin_runs_through_a_command_prefix(tmp_path):
    plugin = script(tmp_path, "p", 'echo "{\\"argv0\\": \\"$0\\"}"')
    assert exec_plugin(str(plugin), {}, b"", command_prefix=("env",)) == {"argv0": str(plugin)}


def test_empty_output_is_none(tmp_path):
    assert exec_plugin(str(script(tmp_path, "p", "exit 0")), {}, b"") is None


def test_an_error_object_becomes_the_same_cni_error(tmp_path):
    err = {"cniVersion": "1.0.0", "code": TRY_AGAIN_LATER, "msg": "pool busy", "details": "retry"}
    plugin = script(tmp_path, "p", f"echo '{json.dumps(err)}'; echo 'log line' >&2; exit 1")
    with pytest.raises(CNIError) as info:
        exec_plugin(str(plugin), {}, b"")
    assert (info.value.code, info.value.msg, info.value.details) == (TRY_AGAIN_LATER, "pool busy", "retry")


@pytest.mark.parametrize("stdout", ["", "not json", '{"msg": "no code"}', "[" * 50_000, '"\\xff"'])
def test_a_failure_without_an_error_object_is_internal_with_stderr(tmp_path, stdout):
    plugin = script(tmp_path, "p", f"printf '%s' '{stdout}'; echo 'panic: boom' >&2; exit 3")
    with pytest.raises(CNIError) as info:
        exec_plugin(str(plugin), {}, b"")
    assert info.value.code == INTERNAL and "exit 3" in info.value.msg
    assert "panic: boom" in info.value.details


@pytest.mark.parametrize("stdout", ["not json", "[1]", '"x"', "[" * 50_000])
def test_success_with_unreadable_output_is_a_decode_failure(tmp_path, stdout):
    plugin = script(tmp_path, "p", f"printf '%s' '{stdout}'")
    with pytest.raises(CNIError) as info:
        exec_plugin(str(plugin), {}, b"")
    assert info.value.code == DECODE_FAILURE


def test_odd_error_fields_are_normalised(tmp_path):
    plugin = script(tmp_path, "p", """echo '{"code": "7", "msg": 5, "details": null}'; exit 1""")
    with pytest.raises(CNIError) as info:
        exec_plugin(str(plugin), {}, b"")
    assert (info.value.code, info.value.msg, info.value.details) == (7, "5", "")
    plugin = script(tmp_path, "q", """echo '{"code": true, "msg": "x"}'; exit 1""")
    with pytest.raises(CNIError) as info:
        exec_plugin(str(plugin), {}, b"")
    assert info.value.code == INTERNAL


def test_a_plugin_that_cannot_run_is_not_available(tmp_path):
    with pytest.raises(CNIError) as info:
        exec_plugin(str(tmp_path / "absent"), {}, b"")
    assert info.value.code == PLUGIN_NOT_AVAILABLE


def test_a_nul_in_the_environment_is_a_cni_error(tmp_path):
    with pytest.raises(CNIError) as info:
        exec_plugin(str(script(tmp_path, "p", "exit 0")), {"CNI_ARGS": "A=\0"}, b"")
    assert info.value.code == INTERNAL


def test_a_hung_plugin_is_killed_at_the_timeout(tmp_path):
    marker = tmp_path / "pid"
    plugin = script(tmp_path, "p", f"echo $$ > {marker}; exec sleep 60")
    with pytest.raises(CNIError) as info:
        exec_plugin(str(plugin), {}, b"", timeout=0.5)
    assert info.value.code == INTERNAL and "timed out" in info.value.msg
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):  # subprocess.run killed and reaped it
        os.kill(pid, 0)
