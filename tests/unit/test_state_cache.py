"""The parsed-state cache and the row-by-row encoding of ipam.json and endpoints.json.

A process (vnetd) keeps what it last read or wrote, keyed by the file's exact bytes: any other
writer (a plugin run in-process, another vnetd, an operator, a corrupting disk) makes the next
read parse the file again. Encoding row by row writes exactly the bytes encode_document would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from vnetcni.ipam.allocator import allocate, apply_pool, release
from vnetcni.ipam.model import Allocation, NodePool
from vnetcni.ipam.store import IpamStore
from vnetcni.plugins.endpoints import EndpointRecord, EndpointStore
from vnetcni.state import durable
from vnetcni.state.durable import CorruptState, encode_document, encode_with_rows


def record(cid: str, pod: str = "web-0", **extra) -> EndpointRecord:
    return EndpointRecord("net", cid, "eth0", "azv" + cid[:11], "azure0", ips=["10.240.0.36/16"],
                          gateways=["10.240.0.1"], routes=[{"dst": "0.0.0.0/0", "gw": "10.240.0.1"}],
                          pod_name=pod, pod_namespace="default", **extra)


def other_process(code: str) -> None:
    """Run code in a fresh interpreter: a writer whose writes this process's cache never saw."""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture
def parses(monkeypatch):
    """How many times a document's body was parsed and checked (cache misses)."""
    count = [0]
    original = durable.DurableDocument._decode

    def counting(self, raw):
        count[0] += 1
        return original(self, raw)

    monkeypatch.setattr(durable.DurableDocument, "_decode", counting)
    return count


# --- encoding ----------------------------------------------------------------------------------
changes = st.lists(st.tuples(st.sampled_from(["put", "replace", "remove"]), st.integers(0, 30)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(changes)
def test_row_by_row_encoding_is_byte_for_byte_encode_document(ops):
    table: dict[str, EndpointRecord] = {}
    rows: dict = {}
    for op, n in ops:
        cid = f"c{n:02d}"
        key = f"net/{cid}/eth0"
        if op == "put":
            table[key] = record(cid)
        elif op == "replace" and key in table:
            table[key] = record(cid, pod=f"web-{time.monotonic_ns()}")
        else:
            table.pop(key, None)
        head = {"kind": "k", "schemaVersion": 1}
        data, rows = encode_with_rows(head, {"endpoints": (table, EndpointRecord.to_dict)}, rows)
        assert data == encode_document(dict(head, endpoints={k: r.to_dict() for k, r in table.items()}))
        assert json.loads(data)["endpoints"] == {k: r.to_dict() for k, r in table.items()}


def test_the_encoding_is_the_one_files_already_have():
    """One line per table row, keys sorted: what nodes upgraded in place have on disk."""
    doc = {"kind": "k", "schemaVersion": 1, "t": {"b": {"y": 2, "x": [1]}, "a": {"z": None}}, "e": {}, "l": [1, 2]}
    assert encode_document(doc) == (b'{\n  "e": {},\n  "kind": "k",\n  "l": [1, 2],\n  "schemaVersion": 1,\n'
                                    b'  "t": {\n    "a": {"z": null},\n    "b": {"x": [1], "y": 2}\n  }\n}\n')
    assert encode_document({}) == b"{\n\n}\n"


def test_ipam_file_bytes_do_not_depend_on_the_cache(tmp_path):
    """The same state written by a cold process and by a warm one: the same bytes."""
    store = IpamStore(str(tmp_path))
    pool = NodePool("10.240.0.0/16", "10.240.0.1", "10.240.0.4", "00:0d:3a:00:00:01",
                    tuple(f"10.240.0.{i}" for i in range(5, 60)))
    store.apply(lambda s: apply_pool(s, pool, 1000.0, "file"))
    for i in range(20):
        store.apply(lambda s, i=i: allocate(s, "net", f"c{i}", "eth0", 1000.0 + i))
    store.apply(lambda s: release(s, "net/c3/eth0", 2000.0, 30))
    warm = (tmp_path / "ipam.json").read_bytes()
    assert warm == encode_document(IpamStore(str(tmp_path)).read().to_doc())


# --- the cache ---------------------------------------------------------------------------------
def test_a_warm_process_does_not_parse_its_own_writes_again(tmp_path, parses):
    store = EndpointStore(str(tmp_path))
    for i in range(10):
        store.put(record(f"c{i}"))
    before = parses[0]
    for _ in range(5):
        assert len(store.all()) == 10
        assert store.get("net/c3/eth0") == record("c3")
    store.remove("net/c4/eth0")
    assert parses[0] == before  # every read and write above used what this process knew


def test_a_write_by_another_process_is_seen_at_once(tmp_path):
    sd = str(tmp_path)
    store = EndpointStore(sd)
    store.put(record("c1", pod="aaaa"))
    assert store.get("net/c1/eth0").pod_name == "aaaa"
    # Another process replaces the record with one of the same size, within the same second:
    # only the content tells them apart.
    other_process(f"""
from vnetcni.plugins.endpoints import EndpointRecord, EndpointStore
EndpointStore({sd!r}).put(EndpointRecord("net", "c1", "eth0", "azvc1", "azure0", ips=["10.240.0.36/16"],
    gateways=["10.240.0.1"], routes=[{{"dst": "0.0.0.0/0", "gw": "10.240.0.1"}}], pod_name="bbbb",
    pod_namespace="default"))
""")
    assert store.get("net/c1/eth0").pod_name == "bbbb"
    store.put(record("c2"))  # a change made on top of the other writer's, not of the cached state
    assert {k: r.pod_name for k, r in EndpointStore(sd).all().items()} == {"net/c1/eth0": "bbbb",
                                                                           "net/c2/eth0": "web-0"}


def test_the_ipam_state_another_process_wrote_is_the_one_allocated_from(tmp_path):
    sd = str(tmp_path)
    store = IpamStore(sd)
    pool = NodePool("10.240.0.0/16", "10.240.0.1", "10.240.0.4", "00:0d:3a:00:00:01",
                    ("10.240.0.5", "10.240.0.6", "10.240.0.7"))
    store.apply(lambda s: apply_pool(s, pool, 1000.0, "file"))
    first = store.apply(lambda s: allocate(s, "net", "c1", "eth0", 1000.0))
    other_process(f"""
from vnetcni.ipam.allocator import allocate
from vnetcni.ipam.store import IpamStore
IpamStore({sd!r}).apply(lambda s: allocate(s, "net", "c2", "eth0", 1000.0))
""")
    third = store.apply(lambda s: allocate(s, "net", "c3", "eth0", 1000.0))
    held = {a.ip for a in IpamStore(sd).read().allocations.values()}
    assert held == {"10.240.0.5", "10.240.0.6", "10.240.0.7"}  # never the other process's address
    assert (first.ip, third.ip) == ("10.240.0.5", "10.240.0.7")


def test_a_file_corrupted_behind_a_warm_cache_is_reported_corrupt(tmp_path):
    store = EndpointStore(str(tmp_path))
    store.put(record("c1"))
    assert store.all()
    path = tmp_path / "endpoints.json"
    path.write_bytes(path.read_bytes()[:40])  # truncated by someone else
    with pytest.raises(CorruptState):
        store.all()
    assert path.read_bytes()[:40] == path.read_bytes()  # a read moves nothing
    store.put(record("c2"))  # a writer moves it aside and starts afresh, as without a cache
    assert list(store.all()) == ["net/c2/eth0"]
    assert [n for n in os.listdir(tmp_path) if n.startswith("endpoints.json.corrupt-")]


def test_what_a_reader_changes_is_its_own_copy(tmp_path):
    store = EndpointStore(str(tmp_path))
    store.put(record("c1"))
    mine = store.all()
    mine.clear()
    assert list(store.all()) == ["net/c1/eth0"]
    ipam = IpamStore(str(tmp_path))
    pool = NodePool("10.240.0.0/16", "10.240.0.1", "10.240.0.4", "00:0d:3a:00:00:01", ("10.240.0.5",))
    ipam.apply(lambda s: apply_pool(s, pool, 1000.0, "file"))
    state = ipam.read()
    state.allocations["x"] = Allocation("10.240.0.5/16", "10.240.0.1", "net", "x", "eth0", 1.0)
    state.refresh.last_error = "changed by a reader"
    fresh = ipam.read()
    assert fresh.allocations == {} and fresh.refresh.last_error == ""


def test_records_shared_between_copies_cannot_be_changed_in_place():
    rec = record("c1")
    with pytest.raises(AttributeError):
        rec.pod_name = "other"
    alloc = Allocation("10.240.0.5/16", "10.240.0.1", "net", "c1", "eth0", 1.0)
    with pytest.raises(AttributeError):
        alloc.address6 = "fd00::5/64"
    assert alloc.replace(address6="fd00::5/64", gateway6="fd00::1").ips == ("10.240.0.5", "fd00::5")


def test_held_ips_are_the_holders_addresses():
    from vnetcni.ipam.model import IpamState

    state = IpamState()
    state.allocations = {
        "net/a/eth0": Allocation("10.240.0.5/16", "10.240.0.1", "net", "a", "eth0", 1.0),
        "net/b/eth0": Allocation("10.240.0.6/16", "10.240.0.1", "net", "b", "eth0", 1.0, address6="fd00::6/64",
                                 gateway6="fd00::1"),
    }
    assert state.held_ips() == set(state.holders()) == {"10.240.0.5", "10.240.0.6", "fd00::6"}
