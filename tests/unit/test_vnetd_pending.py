"""vnetd's pending deletes (DELs a no-fallback front door recorded while vnetd did not answer)."""

from __future__ import annotations

import json
import os

from vnetcni.daemon import protocol
from vnetcni.daemon.pending import PendingDeletes, attachment_key
from vnetcni.node.layout import NodeLayout


def record(layout: NodeLayout, container: str, command: str = "DEL", network: str = "n") -> str:
    os.makedirs(layout.pending_deletes, exist_ok=True)
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0", "CNI_NETNS": "/gone"}
    data = protocol.encode_request("vnet", env, json.dumps({"name": network}).encode(), timeout=5, ns="1:2")
    path = os.path.join(layout.pending_deletes, attachment_key("vnet", network, container, "eth0") + ".del")
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_carried_out_once_kept_when_failing_moved_aside_when_unreadable(tmp_path):
    layout = NodeLayout(str(tmp_path))
    ran, failing = [], {"bad-del"}

    def run(req):
        ran.append(req.env["CNI_CONTAINERID"])
        return (b'{"code": 11, "msg": "no"}', 1) if req.env["CNI_CONTAINERID"] in failing else (b"", 0)

    pending = PendingDeletes(layout, run)
    assert pending.carry_out_all() == 0  # no directory yet: nothing to do, nothing created
    ok, bad = record(layout, "ok"), record(layout, "bad-del")
    not_del = record(layout, "add", command="ADD")
    garbage = os.path.join(layout.pending_deletes, "0123.del")
    open(garbage, "wb").write(b"junk")
    assert pending.carry_out_all() == 3  # ok, plus the two set aside
    assert sorted(ran) == ["bad-del", "ok"]
    assert not os.path.exists(ok) and os.path.exists(bad)
    assert os.path.exists(not_del + ".bad") and os.path.exists(garbage + ".bad")
    failing.clear()
    assert pending.carry_out_all() == 1 and not os.path.exists(bad)


def test_a_call_of_the_same_attachment_waits_for_its_pending_delete(tmp_path):
    layout = NodeLayout(str(tmp_path))
    results = [(b'{"code": 11, "msg": "vnetd: lock busy"}', 1), (b"", 0)]
    pending = PendingDeletes(layout, lambda req: results.pop(0))
    path = record(layout, "c1")
    add = protocol.decode_request(protocol.encode_request(
        "vnet", {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}, b"{}", timeout=5, ns="1:2"))
    other = protocol.decode_request(protocol.encode_request(
        "vnet", {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c2", "CNI_IFNAME": "eth0"}, b"{}", timeout=5, ns="1:2"))
    assert pending.before(other, "n") == ""  # another attachment: not held up
    why = pending.before(add, "n")
    assert "pending DEL" in why and os.path.exists(path)  # failed: the ADD must not go first
    assert pending.before(add, "n") == "" and not os.path.exists(path)


def test_vnetctl_status_shows_dels_waiting_for_vnetd(tmp_path):
    from typer.testing import CliRunner

    from vnetcni.cli.main import app

    layout = NodeLayout(str(tmp_path))
    record(layout, "c1")
    record(layout, "c2")
    res = CliRunner().invoke(app, ["status", "--state-dir", str(tmp_path), "-o", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["vnetd"]["pending_deletes"] == 2
    res = CliRunner().invoke(app, ["status", "--state-dir", str(tmp_path)])
    assert "2 DEL(s) recorded while vnetd did not answer" in res.stdout
