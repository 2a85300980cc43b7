"""A node upgraded in place: vnetd started on the state files an older vnet-cni wrote (schemaVersion
1, one JSON document each) keeps every running pod's address and record, hands out no address a
pod holds, tears the old pods down, and leaves the files as journals (schemaVersion 2)."""

from __future__ import annotations

import json
import os

from support.cni import links, metadata_xml, run_plugin
from support.statefiles import load_state
from support.vnetd import Daemon, wait_for_teardowns
from vnetcni.state.durable import encode_document


def conf_for(state_dir, tmp_path) -> dict:
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 46)]))
    return {"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet", "bridge": "vntbr0", "stateDir": state_dir,
            "ipam": {"type": "vnet-ipam", "metadataFile": str(md), "reuseCooldownSeconds": 0}}


def as_older_code_wrote_it(path: str) -> None:
    """The file's state as one document, schemaVersion 1, encoded as vnet-cni wrote it before journals."""
    doc = dict(load_state(path), schemaVersion=1)
    with open(path, "wb") as f:
        f.write(encode_document(doc))


def test_vnetd_on_the_state_files_of_an_older_version(cni_bin, node_ns, pod_ns, tmp_path, state_dir):
    conf = conf_for(state_dir, tmp_path)
    vnet = os.path.join(cni_bin, "vnet")
    daemon = Daemon(node_ns, state_dir, str(tmp_path / "vnetd.log")).start()
    pods = {f"old{i}": pod_ns() for i in range(3)}
    held = {}
    try:
        for cid, (_, path) in pods.items():
            r = run_plugin(vnet, "ADD", conf, node=node_ns, container_id=cid, netns=path, cni_path=cni_bin)
            assert r.ok, r
            held[cid] = r.out["ips"][0]["address"]
    finally:
        daemon.stop()
    for name in ("ipam.json", "endpoints.json"):
        as_older_code_wrote_it(os.path.join(state_dir, name))
        with open(os.path.join(state_dir, name), "rb") as f:
            assert json.loads(f.read())["schemaVersion"] == 1  # one document, as before journals

    daemon.start()  # the upgraded vnetd, on the old files
    try:
        for cid, (_, path) in pods.items():  # a repeated ADD answers what the old record says
            r = run_plugin(vnet, "ADD", conf, node=node_ns, container_id=cid, netns=path, cni_path=cni_bin)
            assert r.ok and r.out["ips"][0]["address"] == held[cid], r
        new = {}
        for i in range(3):
            cid, (_, path) = f"new{i}", pod_ns()
            r = run_plugin(vnet, "ADD", conf, node=node_ns, container_id=cid, netns=path, cni_path=cni_bin)
            assert r.ok, r
            new[cid] = r.out["ips"][0]["address"]
        assert not set(new.values()) & set(held.values()), "an address a running pod holds was handed out"
        for name in ("ipam.json", "endpoints.json"):
            with open(os.path.join(state_dir, name), "rb") as f:
                assert json.loads(f.readline())["schemaVersion"] == 2  # migrated by the first change
        assert sorted(load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"]) == sorted(
            f"vntnet/{cid}/eth0" for cid in [*held, *new])
        for cid in [*held, *new]:
            assert run_plugin(vnet, "DEL", conf, node=node_ns, container_id=cid, netns="", cni_path=cni_bin).ok
        wait_for_teardowns(state_dir)
    finally:
        daemon.stop()
    assert load_state(os.path.join(state_dir, "ipam.json"))["allocations"] == {}
    assert load_state(os.path.join(state_dir, "endpoints.json"))["endpoints"] == {}
    assert not [link for link in links(node_ns) if link.startswith("azv")]
