"""ipam.json on disk: empty and unreadable files, the guard that keeps ADD from handing out
addresses after a corrupt file was moved aside, and the rebuild that lifts it."""

from __future__ import annotations

import json
import os
import threading

import pytest

from vnetcni.cni.config import parse_netconf
from vnetcni.cni.errors import CNIError
from vnetcni.cni.invocation import Invocation
from vnetcni.ipam.metadata import render_node
from vnetcni.ipam.plugin import IpamPlugin
from vnetcni.ipam.rebuild import NoEvidence, rebuild
from vnetcni.ipam.sources import FakeMetadataSource
from vnetcni.ipam.store import IpamStore
from vnetcni.state.durable import CorruptState
from support.statefiles import load_state

XML = render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 66)])


class Node:
    """One node's IPAM, driven in-process with a fake metadata source."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.source = FakeMetadataSource(XML)
        self.plugin = IpamPlugin(source_factory=lambda cfg: self.source, clock=lambda: 1000.0)
        self.conf = parse_netconf({"cniVersion": "1.1.0", "name": "vntnet", "type": "vnet",
                                   "ipam": {"type": "vnet-ipam", "stateDir": state_dir}})

    def inv(self, command: str, cid: str) -> Invocation:
        return Invocation(command=command, container_id=cid, netns="/run/netns/x" if command != "DEL" else "",
                          ifname="eth0")

    def add(self, cid: str) -> str:
        return self.plugin.add(self.inv("ADD", cid), self.conf).ips[0].address

    def delete(self, cid: str) -> None:
        self.plugin.delete(self.inv("DEL", cid), self.conf)

    @property
    def path(self) -> str:
        return os.path.join(self.state_dir, "ipam.json")

    def corrupt_files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.state_dir) if ".corrupt-" in n)


@pytest.fixture
def node(state_dir) -> Node:
    return Node(state_dir)


@pytest.mark.parametrize("content", [b"", b"   \n\t \n"], ids=["empty", "whitespace"])
def test_an_empty_file_is_a_truncated_one_not_an_empty_state(node, content):
    """Never written so (the writes are atomic): a file truncated by a crash or by hand. Taking it
    for "no allocations" would hand every live pod's address out again."""
    node.add("a")
    with open(node.path, "wb") as f:
        f.write(content)
    with pytest.raises(CorruptState) as info:
        node.add("b")
    assert "empty" in info.value.msg and len(node.corrupt_files()) == 1
    with pytest.raises(CNIError) as info:
        node.add("b")
    assert info.value.code == 101 and "--rebuild" in info.value.msg


def good_doc(node: Node) -> dict:
    """The state as one document in the format before journals (schemaVersion 1), still read."""
    node.add("a")
    return dict(load_state(node.path), schemaVersion=1)


def shapes(node: Node) -> dict[str, bytes]:
    doc = good_doc(node)

    def variant(**changes) -> bytes:
        return json.dumps({**doc, **changes}).encode()

    alloc = doc["allocations"]["vntnet/a/eth0"]
    return {
        "nul bytes": b"\x00" * 64,
        "nul inside": json.dumps(doc).encode()[:40] + b"\x00" + json.dumps(doc).encode()[40:],
        "bad json": b'{"kind": "vnet-ipam", "schemaVersion": 1,',
        "a list": b"[]",
        "other kind": variant(kind="vnet-endpoints"),
        "schema 3": variant(schemaVersion=3),
        "no schema": json.dumps({k: v for k, v in doc.items() if k != "schemaVersion"}).encode(),
        "allocations list": variant(allocations=[alloc]),
        "allocation no address": variant(allocations={"vntnet/a/eth0": {**alloc, "address": None}}),
        "allocation bad address": variant(allocations={"vntnet/a/eth0": {**alloc, "address": "10.240.0.36"}}),
        "allocation bad time": variant(allocations={"vntnet/a/eth0": {**alloc, "allocated": "yesterday"}}),
        "key mismatch": variant(allocations={"vntnet/b/eth0": alloc}),
        "duplicate address": variant(allocations={"vntnet/a/eth0": alloc, "vntnet/b/eth0": {**alloc, "containerId": "b"}}),
        "pool addresses": variant(pool={**doc["pool"], "addresses": "10.240.0.36"}),
        "pool numbers": variant(pool={**doc["pool"], "addresses": [36, 37]}),
        "cooling list": variant(cooling=["10.240.0.36"]),
        "recovered string": variant(recovered="x"),
    }


SHAPES = ["nul bytes", "nul inside", "bad json", "a list", "other kind", "schema 3", "no schema", "allocations list",
          "allocation no address", "allocation bad address", "allocation bad time", "key mismatch",
          "duplicate address", "pool addresses", "pool numbers", "cooling list", "recovered string"]


@pytest.mark.parametrize("shape", SHAPES)
def test_unreadable_state_is_moved_aside_and_add_refused_until_rebuild(node, shape):
    raw = shapes(node)[shape]
    with open(node.path, "wb") as f:
        f.write(raw)
    with pytest.raises(CorruptState) as info:
        node.add("b")
    assert info.value.code == 101 and "moved aside" in info.value.msg
    assert not os.path.exists(node.path)
    [kept] = node.corrupt_files()
    with open(os.path.join(node.state_dir, kept), "rb") as f:
        assert f.read() == raw  # kept byte for byte, never deleted

    # The next ADD must not start from an empty pool: a live pod may hold any address.
    with pytest.raises(CNIError) as info:
        node.add("b")
    assert info.value.code == 101 and "--rebuild" in info.value.msg and kept in info.value.msg
    node.delete("b")  # DEL still succeeds (nothing known to release)

    with pytest.raises(NoEvidence):  # no endpoint records to rebuild from: the guard stays
        rebuild(node.state_dir)
    with pytest.raises(CNIError):
        node.add("b")
    report = rebuild(node.state_dir, force=True)
    assert report.recovered == [kept] and "no " in report.forced
    assert node.add("b") == "10.240.0.36/16"
    assert node.corrupt_files() == [kept]


def test_del_that_finds_the_file_corrupt_still_succeeds(node):
    with open(node.path, "wb") as f:
        f.write(b"\x00\x00")
    node.delete("a")
    assert len(node.corrupt_files()) == 1


def test_status_and_check_report_the_pending_rebuild(node):
    with open(node.path, "wb") as f:
        f.write(b"not json")
    for _ in range(2):  # finding the file corrupt, then finding it moved aside
        with pytest.raises(CNIError) as info:
            node.plugin.status(node.inv("STATUS", ""), node.conf)
        assert info.value.code == 50 and "rebuild" in info.value.msg + info.value.details
    with pytest.raises(CNIError) as info:
        node.plugin.check(node.inv("CHECK", "a"), node.conf)
    assert info.value.code == 101


def corrupt(path: str) -> None:
    """Garbage in the middle of the file: unreadable whatever its format (a line appended after
    a journal's last change would be one more append that was never committed)."""
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2] + b"garbage" + raw[len(raw) // 2:])


def write_endpoints(state_dir: str, records: dict) -> None:
    with open(os.path.join(state_dir, "endpoints.json"), "w") as f:
        json.dump({"kind": "vnet-endpoints", "schemaVersion": 1, "endpoints": records}, f)


def endpoint(cid: str, ips: list[str], **extra) -> dict:
    return {"network": "vntnet", "containerId": cid, "ifName": "eth0", "hostIfName": f"azv{cid}",
            "bridge": "azure0", "ips": ips, "gateway": "10.240.0.1",
            "podName": f"pod-{cid}", "podNamespace": "default", "created": "2024-05-01T12:00:00+00:00", **extra}


def test_rebuild_adopts_endpoint_addresses_so_they_are_not_handed_out_twice(node):
    node.add("lost")  # 10.240.0.36: the corruption below loses this record
    corrupt(node.path)
    with pytest.raises(CorruptState):
        node.add("x")
    write_endpoints(node.state_dir, {
        "vntnet/p1/eth0": endpoint("p1", ["10.240.0.36/16"]),
        "vntnet/p2/eth0": endpoint("p2", ["fd00::5/64", "10.240.0.38/16"]),
        "vntnet/p3/eth0": endpoint("p3", ["10.240.0.38/16"]),  # conflicts with p2
        "vntnet/p4/eth0": endpoint("p4", ["10.88.0.5/16"], ipam="host-local"),
        "vntnet/p5/eth0": endpoint("p5", []),
    })
    report = rebuild(node.state_dir)
    assert sorted(report.adopted) == ["vntnet/p1/eth0", "vntnet/p2/eth0"]
    assert len(report.conflicts) == 1 and "10.240.0.38" in report.conflicts[0]
    assert len(report.skipped) == 2
    state = IpamStore(node.state_dir).read()
    p2 = state.allocations["vntnet/p2/eth0"]
    assert (p2.address, p2.gateway, p2.pod) == ("10.240.0.38/16", "10.240.0.1", "default/pod-p2")
    handed = {node.add(c) for c in ("n1", "n2")}
    assert handed == {"10.240.0.37/16", "10.240.0.39/16"}  # around the adopted .36 and .38


def test_rebuild_keeps_what_ipam_json_holds(node):
    node.add("a")
    write_endpoints(node.state_dir, {"vntnet/b/eth0": endpoint("b", ["10.240.0.36/16"])})
    report = rebuild(node.state_dir)
    assert report.kept == 1 and report.adopted == [] and report.conflicts
    assert set(IpamStore(node.state_dir).read().allocations) == {"vntnet/a/eth0"}


@pytest.mark.parametrize("content", [b"{", b'{"kind": "other", "schemaVersion": 1}', b'[1]'])
def test_rebuild_refuses_an_unreadable_endpoints_file_and_moves_nothing(node, content):
    with open(os.path.join(node.state_dir, "endpoints.json"), "wb") as f:
        f.write(content)
    with pytest.raises(CNIError) as info:
        rebuild(node.state_dir)
    assert info.value.code == 101 and "cannot rebuild" in info.value.msg
    assert os.path.exists(os.path.join(node.state_dir, "endpoints.json"))


def test_rebuild_without_endpoints_file_says_so(node):
    report = rebuild(node.state_dir)
    assert not report.endpoints_found and report.adopted == []


def test_unchanged_transaction_does_not_write(node):
    node.add("a")
    before = os.stat(node.path)
    node.add("a")  # same owner: same answer, nothing to write
    node.delete("nobody")
    after = os.stat(node.path)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_fresh_state_dir_is_created(tmp_path):
    node = Node(str(tmp_path / "deep" / "state"))
    assert node.add("a") == "10.240.0.36/16"


def test_concurrent_readers_of_a_corrupt_file_move_nothing_and_writers_move_it_once(node):
    with open(node.path, "wb") as f:
        f.write(b"\x00corrupt")
    store = IpamStore(node.state_dir)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def reader(read):
        barrier.wait()
        try:
            read()
            outcomes.append("empty")
        except CorruptState as err:
            outcomes.append("moved" if err.moved_to else "in place")
        except Exception as exc:  # noqa: BLE001 - the test reports whatever else happened
            outcomes.append(repr(exc))

    def run(read):
        outcomes.clear()
        threads = [threading.Thread(target=reader, args=(read,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run(store.read)  # a status command, a metrics scrape: no side effects
    assert outcomes == ["in place"] * 8 and node.corrupt_files() == []
    run(store.read_for_update)  # callers about to write: one moves it, the others find it gone
    assert outcomes.count("moved") == 1 and outcomes.count("empty") == 7, outcomes
    assert len(node.corrupt_files()) == 1


def test_two_corrupt_files_in_one_second_keep_their_own_evidence(node, monkeypatch):
    import time as time_module

    monkeypatch.setattr(time_module, "gmtime", lambda *a: time_module.struct_time((2026, 1, 1, 0, 0, 0, 3, 1, 0)))
    for raw in (b"\x00first", b"\x00second", b"\x00third"):
        with open(node.path, "wb") as f:
            f.write(raw)
        with pytest.raises(CorruptState):
            node.add("x")  # the writer moves it aside; same second, same pid each time
    kept = node.corrupt_files()
    assert len(kept) == 3
    contents = set()
    for name in kept:
        with open(os.path.join(node.state_dir, name), "rb") as f:
            contents.add(f.read())
    assert contents == {b"\x00first", b"\x00second", b"\x00third"}


def test_rebuild_refuses_without_records_for_this_state(node):
    node.add("a")
    corrupt(node.path)
    # Records exist, but every address came from another vnet-ipam state directory.
    write_endpoints(node.state_dir, {"vntnet/p1/eth0": endpoint("p1", ["10.240.0.36/16"],
                                                                ipamStateDir="/var/run/elsewhere")})
    with pytest.raises(NoEvidence) as info:
        rebuild(node.state_dir)
    assert info.value.code == 101 and "--force" in info.value.details
    assert os.path.exists(node.path)  # refused before anything moved
    report = rebuild(node.state_dir, force=True)
    assert report.forced and report.adopted == [] and len(report.skipped) == 1


def test_rebuild_reads_the_records_under_their_lock(node):
    from vnetcni.plugins.endpoints import EndpointStore

    node.add("a")
    corrupt(node.path)
    write_endpoints(node.state_dir, {"vntnet/p1/eth0": endpoint("p1", ["10.240.0.36/16"])})
    store = EndpointStore(node.state_dir)
    with store.doc.locked():  # an ADD or DEL is changing the records right now
        done = []
        t = threading.Thread(target=lambda: done.append(rebuild(node.state_dir)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not done  # the rebuild waits for the records
    t.join(15)
    assert done and done[0].adopted == ["vntnet/p1/eth0"]
