"""The vnetd process a node runs: the serving process is the one started (same pid, same
command line, so supervisors, `vnetctl` and `kill` find it), without the argument parser's
modules loaded, and it serves and stops as before."""

from __future__ import annotations

import os

from support.cni import metadata_xml, run_plugin
from support.vnetd import VNETD, Daemon, wait_for_teardowns


def test_vnetd_serves_from_the_process_started_without_the_argument_parser(cni_bin, node_ns, pod_ns, tmp_path,
                                                                          state_dir):
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 40)]))
    conf = {"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet", "bridge": "vntbr0", "stateDir": state_dir,
            "ipam": {"type": "vnet-ipam", "metadataFile": str(md), "reuseCooldownSeconds": 0}}
    d = Daemon(node_ns, state_dir, str(tmp_path / "log"))
    try:
        d.start()
        pid = d.proc.pid  # `ip netns exec` execs vnetd: this is vnetd's pid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        assert VNETD in argv and argv[argv.index("--state-dir") + 1] == state_dir  # the command line kept
        with open(f"/proc/{pid}/comm") as f:
            assert f.read().strip() == "vnetd"  # and the name ps and pgrep match
        _, path = pod_ns()
        r = run_plugin(os.path.join(cni_bin, "vnet"), "ADD", conf, node=node_ns, container_id="ctr0", netns=path,
                       cni_path=cni_bin)
        assert r.ok, r
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
        assert "pydantic_core" not in maps  # typer's dependencies were never loaded to serve
        r = run_plugin(os.path.join(cni_bin, "vnet"), "DEL", conf, node=node_ns, container_id="ctr0", netns=path,
                       cni_path=cni_bin)
        assert r.ok, r
        assert [x["verb"] for x in d.served()] == ["ADD", "DEL"]
        wait_for_teardowns(state_dir)
    finally:
        d.stop()
    assert d.proc.returncode == 0
    assert not os.path.exists(os.path.join(state_dir, "vnetd.sock"))
