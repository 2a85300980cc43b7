"""ipam.json and endpoints.json as journals (state/journal.py): a change appends its rows, a
long journal is compacted, a torn last line is an append that never happened, anything else that
is not the format is corrupt, files from before journals are read and migrated by the first
change; and what a process read or wrote is reused only while the file is the same file.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from support.statefiles import load_state
from vnetcni.cni.errors import IO_FAILURE, CNIError
from vnetcni.ipam.allocator import allocate, apply_pool, release
from vnetcni.ipam.model import Allocation, NodePool
from vnetcni.ipam.store import IpamStore
from vnetcni.plugins.endpoints import EndpointRecord, EndpointStore
from vnetcni.state import journal
from vnetcni.state.durable import CorruptState, DurableDocument, encode_document
from vnetcni.state.journal import JOURNAL_VERSION, MIN_CHANGES, JournaledDocument


def record(cid: str, pod: str = "web-0", dns: dict | None = None, **extra) -> EndpointRecord:
    return EndpointRecord("net", cid, "eth0", "azv" + cid[:11], "azure0", ips=["10.240.0.36/16"],
                          gateways=["10.240.0.1"], routes=[{"dst": "0.0.0.0/0", "gw": "10.240.0.1"}],
                          pod_name=pod, pod_namespace="default", dns=dns, **extra)


def other_process(code: str) -> None:
    """Run code in a fresh interpreter: a writer whose writes this process never saw."""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def forget_all() -> None:
    """What a fresh process knows: nothing (every file is read again)."""
    journal._snapshots.clear()


def lines(path) -> list[dict]:
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines()]


def without_count(data: bytes) -> bytes:
    """The file but the header's count of changes (10 characters, rewritten in place)."""
    assert data.startswith(b'{"changes": ')
    return data[:12] + data[22:]


POOL = NodePool("10.240.0.0/16", "10.240.0.1", "10.240.0.4", "00:0d:3a:00:00:01",
                tuple(f"10.240.0.{i}" for i in range(5, 60)))


@pytest.fixture
def parses(monkeypatch):
    """How many times a file was read and parsed (a process knew nothing it could reuse)."""
    count = [0]
    original = JournaledDocument._parse_file

    def counting(self, raw, held):
        count[0] += 1
        return original(self, raw, held)

    monkeypatch.setattr(JournaledDocument, "_parse_file", counting)
    return count


# --- the format --------------------------------------------------------------------------------
def test_a_change_appends_its_rows_and_leaves_every_earlier_byte(tmp_path):
    store = EndpointStore(str(tmp_path))
    path = tmp_path / "endpoints.json"
    for i in range(30):
        store.put(record(f"c{i:02d}"))
    before = path.read_bytes()
    store.put(record("c05", pod="moved"))
    store.remove("net/c07/eth0")
    after = path.read_bytes()
    assert without_count(after).startswith(without_count(before))
    added = [json.loads(line) for line in after[len(before):].splitlines()]
    n = lines(path)[-3]["n"]
    assert lines(path)[0]["changes"] == n + 2
    assert added == [{"n": n + 1, "t": "endpoints", "k": "net/c05/eth0", "v": record("c05", pod="moved").to_dict()},
                     {"n": n + 2, "t": "endpoints", "k": "net/c07/eth0", "v": None}]
    assert load_state(str(path))["endpoints"] == {k: r.to_dict() for k, r in store.all().items()}


def test_a_long_journal_is_compacted_to_a_snapshot_of_the_rows(tmp_path):
    store = EndpointStore(str(tmp_path))
    path = tmp_path / "endpoints.json"
    for i in range(MIN_CHANGES + 10):
        store.put(record(f"c{i:03d}"))
    header, *rest = lines(path)
    assert header["kind"] == "vnet-endpoints" and header["schemaVersion"] == JOURNAL_VERSION
    assert 0 < header["rows"] <= len(rest) and len(rest) - header["rows"] <= MIN_CHANGES
    assert [r["k"] for r in rest[:header["rows"]]] == sorted(r["k"] for r in rest[:header["rows"]])
    forget_all()
    assert sorted(store.all()) == [f"net/c{i:03d}/eth0" for i in range(MIN_CHANGES + 10)]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_the_ipam_state_round_trips_through_appends_and_compactions(tmp_path):
    store = IpamStore(str(tmp_path))
    store.apply(lambda s: apply_pool(s, POOL, 1000.0, "file"))
    for i in range(50):
        store.apply(lambda s, i=i: allocate(s, "net", f"c{i}", "eth0", 1000.0 + i))
    for i in range(0, 50, 3):
        store.apply(lambda s, i=i: release(s, f"net/c{i}/eth0", 2000.0, 30))
    store.apply(lambda s: setattr(s.refresh, "last_error", "metadata timed out") or None)
    warm = store.read()
    forget_all()
    cold = IpamStore(str(tmp_path)).read()
    assert cold.to_doc() == warm.to_doc() == store.document()
    assert load_state(str(tmp_path / "ipam.json")) == warm.to_doc()
    assert cold.refresh.last_error == "metadata timed out" and len(cold.cooling) == 17


def test_a_change_of_the_other_fields_appends_only_those_and_the_journal_stays_small(tmp_path):
    """vnetd's refresher sets the refresh record every few seconds: each change appends the
    refresh record alone (never the pool's addresses), and the journal is compacted by its bytes
    as well as by its count of changes."""
    pool = NodePool("10.240.0.0/16", "10.240.0.1", "10.240.0.4", "00:0d:3a:00:00:01",
                    tuple(f"10.240.{i // 200}.{i % 200 + 5}" for i in range(250)))
    store = IpamStore(str(tmp_path))
    path = tmp_path / "ipam.json"
    store.apply(lambda s: apply_pool(s, pool, 1000.0, "file"))
    snapshot = path.stat().st_size
    store.apply(lambda s: setattr(s.refresh, "last_error", "e0") or None)
    assert lines(path)[-1] == {"n": 1, "head": {"refresh": store.read().refresh.to_doc()}}
    sizes = []
    for i in range(1, 400):
        store.apply(lambda s, i=i: setattr(s.refresh, "last_error", f"e{i}") or None)
        sizes.append(path.stat().st_size)
    assert max(sizes) <= snapshot + max(snapshot // 2, journal.MIN_BYTES) + 1024
    assert min(sizes) < max(sizes)  # compacted on the way
    forget_all()
    assert IpamStore(str(tmp_path)).read().refresh.last_error == "e399"
    assert load_state(str(path)) == store.document()


def test_a_journal_of_large_changes_is_compacted_by_its_bytes(tmp_path):
    store = EndpointStore(str(tmp_path))
    path = tmp_path / "endpoints.json"
    big = {"search": [f"ns{i}.svc.cluster.local" for i in range(200)]}  # ~5 KB a record
    store.put(record("c1", dns=big))
    sizes = []
    for i in range(60):  # fewer than MIN_CHANGES: only the bytes can ask for a compaction
        store.put(record("c1", pod=f"web-{i}", dns=big))
        sizes.append(path.stat().st_size)
    assert max(sizes) <= journal.MIN_BYTES + 3 * len(json.dumps(big)) + 2048
    forget_all()
    assert store.get("net/c1/eth0").pod_name == "web-59"


ops = st.lists(st.tuples(st.sampled_from(["put", "replace", "remove", "mark", "restart"]), st.integers(0, 40)),
               max_size=120)


@settings(max_examples=40, deadline=None)
@given(ops)
def test_any_sequence_of_changes_reads_back_the_same_in_a_warm_and_a_cold_process(tmp_path_factory, steps):
    sd = str(tmp_path_factory.mktemp("j"))
    store = EndpointStore(sd)
    model: dict[str, EndpointRecord] = {}
    for op, i in steps:
        cid = f"c{i:02d}"
        key = f"net/{cid}/eth0"
        if op == "put":
            model[key] = record(cid)
            store.put(model[key])
        elif op == "replace" and key in model:
            model[key] = record(cid, pod=f"web-{time.monotonic_ns()}")
            store.put(model[key])
        elif op == "mark":
            if store.mark_tearing_down(key, "2026-01-01T00:00:00+00:00") is not None:
                if not model[key].tearing_down:
                    model[key] = model[key].replace(tearing_down="2026-01-01T00:00:00+00:00")
        elif op == "restart":
            forget_all()
        else:
            store.remove(key)
            model.pop(key, None)
        assert store.all() == model
    forget_all()
    assert EndpointStore(sd).all() == model
    assert load_state(os.path.join(sd, "endpoints.json")).get("endpoints", {}) == {k: r.to_dict() for k, r in model.items()}


# --- crashes and corruption --------------------------------------------------------------------
def _torn(n: int) -> bytes:
    return b'{"n": %d, "t": "endpoints", "k": "net/c3/eth0", "v": {"tor' % (n + 1)


def _uncounted(n: int) -> bytes:
    return json.dumps({"n": n + 1, "t": "endpoints", "k": "net/c3/eth0", "v": record("c3").to_dict()}).encode() \
        + b"\n" + b'{"n": '


@pytest.mark.parametrize("left", [_torn, _uncounted], ids=["a torn line", "lines past the count"])
def test_what_a_writer_that_died_left_never_happened(tmp_path, left):
    """A writer died in the middle of its lines, or after them, before the count that commits
    them: readers ignore what it wrote (a read changes nothing), the next writer writes over it."""
    store = EndpointStore(str(tmp_path))
    path = tmp_path / "endpoints.json"
    store.put(record("c1"))
    store.put(record("c2"))
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(left(lines(path)[0]["changes"]))
    written = path.read_bytes()
    forget_all()
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0"]
    assert load_state(str(path))["endpoints"].keys() == {"net/c1/eth0", "net/c2/eth0"}
    assert path.read_bytes() == written
    store.put(record("c4"))
    after = path.read_bytes()
    assert without_count(after).startswith(without_count(good)) and b"net/c3/eth0" not in after
    forget_all()
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0", "net/c4/eth0"]
    assert not [n for n in os.listdir(tmp_path) if ".corrupt-" in n]


def _journal(snapshot: list[str], lines_: list[str], header: dict | None = None, **fields) -> bytes:
    head = header or {"changes": len(lines_), "kind": "vnet-endpoints", "schemaVersion": 2, "rows": len(snapshot)}
    return ("\n".join([json.dumps({**head, **fields})] + snapshot + lines_) + "\n").encode()


ROW = json.dumps({"t": "endpoints", "k": "net/c1/eth0", "v": record("c1").to_dict()})
ROW2 = json.dumps({"t": "endpoints", "k": "net/c2/eth0", "v": record("c2").to_dict()})
CHANGE = json.dumps({"n": 1, "t": "endpoints", "k": "net/c2/eth0", "v": record("c2").to_dict()})
UNREADABLE = {
    "a bad line before a good one": _journal([ROW], ['{"n": 1, "t": "endp', CHANGE.replace('"n": 1', '"n": 2')]),
    "a gap in the numbering": _journal([ROW], [CHANGE.replace('"n": 1', '"n": 2')]),
    "no numbering": _journal([ROW], [ROW2]),
    "NUL bytes in a line": _journal([ROW], [CHANGE[:30] + "\x00" + CHANGE[31:]]),
    "more rows than lines": _journal([ROW], [], rows=2),
    "fewer changes than counted": _journal([ROW], [CHANGE], changes=2),
    "truncated in a change": _journal([ROW], [CHANGE])[:-40],
    "truncated in the snapshot": _journal([ROW, ROW2], [CHANGE.replace("c2", "c3")])[:-len(CHANGE) - 40],
    "no count of changes": _journal([ROW], [], {"kind": "vnet-endpoints", "schemaVersion": 2, "rows": 1}),
    "another kind": _journal([ROW], [], kind="vnet-ipam"),
    "a later schema": _journal([ROW], [], schemaVersion=3),
    "an unknown table": _journal([ROW.replace('"endpoints"', '"pods"')], []),
    "a row twice in the snapshot": _journal([ROW, ROW], []),
    "a removal in the snapshot": _journal([ROW, json.dumps({"t": "endpoints", "k": "net/c2/eth0", "v": None})], []),
    "a record of the wrong shape": _journal([ROW.replace('"10.240.0.36/16"', '"10.240.0.36"')], []),
    "a record under another key": _journal([ROW.replace('"k": "net/c1/eth0"', '"k": "net/c9/eth0"')], []),
}


@pytest.mark.parametrize("content", list(UNREADABLE.values()), ids=list(UNREADABLE))
def test_a_journal_that_does_not_read_as_one_is_corrupt_and_kept_aside(tmp_path, content):
    path = tmp_path / "endpoints.json"
    path.write_bytes(content)
    store = EndpointStore(str(tmp_path))
    with pytest.raises(CorruptState) as info:
        store.all()
    assert info.value.moved_to is None and path.read_bytes() == content  # a read moves nothing
    store.put(record("c5"))  # a writer moves it aside and starts afresh
    [kept] = [n for n in os.listdir(tmp_path) if n.startswith("endpoints.json.corrupt-")]
    assert (tmp_path / kept).read_bytes() == content
    assert list(store.all()) == ["net/c5/eth0"]


def test_a_failed_append_commits_nothing(tmp_path, monkeypatch):
    store = EndpointStore(str(tmp_path))
    path = tmp_path / "endpoints.json"
    store.put(record("c1"))
    store.put(record("c2"))
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "fsync", no_space)
    with pytest.raises(CNIError) as info:
        store.put(record("c3"))
    assert info.value.code == IO_FAILURE and "No space left" in info.value.msg
    monkeypatch.undo()
    assert path.read_bytes().startswith(before)  # the count is as it was: lines past it do not count
    forget_all()
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0"]
    store.put(record("c4"))
    forget_all()
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0", "net/c4/eth0"]


# --- files from before journals ----------------------------------------------------------------
def legacy_endpoints(path, records: list[EndpointRecord]) -> bytes:
    """endpoints.json as vnet wrote it before journals (schemaVersion 1, one document)."""
    data = encode_document({"kind": "vnet-endpoints", "schemaVersion": 1,
                            "endpoints": {r.key: r.to_dict() for r in records}})
    with open(path, "wb") as f:
        f.write(data)
    return data


def test_a_file_from_before_journals_is_read_as_it_is_and_migrated_by_the_first_change(tmp_path):
    path = tmp_path / "endpoints.json"
    data = legacy_endpoints(path, [record("c1"), record("c2", tearing_down="2026-01-01T00:00:00+00:00")])
    store = EndpointStore(str(tmp_path))
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0"]
    assert store.get("net/c2/eth0").tearing_down
    assert path.read_bytes() == data  # reads have no side effects
    store.put(record("c3"))
    header, *rest = lines(path)
    assert header == {"changes": 0, "kind": "vnet-endpoints", "schemaVersion": 2, "rows": 3}
    forget_all()
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0", "net/c3/eth0"]
    assert store.get("net/c2/eth0").tearing_down == "2026-01-01T00:00:00+00:00"


def test_an_ipam_file_from_before_journals_keeps_its_allocations(tmp_path):
    path = tmp_path / "ipam.json"
    old = IpamStore(str(tmp_path))
    old.apply(lambda s: apply_pool(s, POOL, 1000.0, "file"))
    for i in range(5):
        old.apply(lambda s, i=i: allocate(s, "net", f"c{i}", "eth0", 1000.0))
    doc = dict(old.document(), schemaVersion=1)
    path.write_bytes(encode_document(doc))  # as the code before journals wrote it
    forget_all()
    store = IpamStore(str(tmp_path))
    new = store.apply(lambda s: allocate(s, "net", "c9", "eth0", 1000.0))
    assert new.ip == "10.240.0.10"  # never one of the five held before the upgrade
    assert len(store.read().allocations) == 6 and lines(path)[0]["schemaVersion"] == 2


def test_code_from_before_journals_refuses_a_journal(tmp_path):
    """Going back to an older vnet fails safe (its corruption guard), never reads an empty state."""
    store = IpamStore(str(tmp_path))
    store.apply(lambda s: apply_pool(s, POOL, 1000.0, "file"))
    store.apply(lambda s: allocate(s, "net", "c1", "eth0", 1000.0))
    store.apply(lambda s: allocate(s, "net", "c2", "eth0", 1000.0))
    older = DurableDocument(str(tmp_path / "ipam.json"), "vnet-ipam", 1, dict)
    with pytest.raises(CorruptState):
        older.read()


# --- what a process knows ----------------------------------------------------------------------
def test_a_warm_process_does_not_read_its_own_writes_again(tmp_path, parses):
    store = EndpointStore(str(tmp_path))
    for i in range(10):
        store.put(record(f"c{i}"))
    before = parses[0]
    for _ in range(5):
        assert len(store.all()) == 10
        assert store.get("net/c3/eth0") == record("c3")
    store.remove("net/c4/eth0")
    assert parses[0] == before  # every read and write above used what this process knew


def test_a_reader_during_a_write_of_this_process_takes_what_was_there_before(tmp_path, parses, monkeypatch):
    """vnetd: an ADD's first read while another thread is writing the file finds it half-written;
    it takes the state before that change (not acknowledged yet) instead of reading it all."""
    store = EndpointStore(str(tmp_path))
    for i in range(5):
        store.put(record(f"c{i}"))
    seen, before = [], parses[0]
    fsync = os.fsync

    def reading(fd):  # a reader that runs while the writer waits for the disk
        fsync(fd)
        seen.append(sorted(EndpointStore(str(tmp_path)).all()))

    monkeypatch.setattr(journal.os, "fsync", reading)
    store.put(record("c9"))
    monkeypatch.undo()
    assert seen == [[f"net/c{i}/eth0" for i in range(5)]] and parses[0] == before
    assert "net/c9/eth0" in store.all() and parses[0] == before
    forget_all()
    assert "net/c9/eth0" in store.all()


def test_a_write_by_another_process_is_seen_at_once(tmp_path):
    sd = str(tmp_path)
    store = EndpointStore(sd)
    store.put(record("c1", pod="aaaa"))
    assert store.get("net/c1/eth0").pod_name == "aaaa"
    other_process(f"""
from vnetcni.plugins.endpoints import EndpointRecord, EndpointStore
EndpointStore({sd!r}).put(EndpointRecord("net", "c1", "eth0", "azvc1", "azure0", ips=["10.240.0.36/16"],
    gateways=["10.240.0.1"], routes=[{{"dst": "0.0.0.0/0", "gw": "10.240.0.1"}}], pod_name="bbbb",
    pod_namespace="default"))
""")
    assert store.get("net/c1/eth0").pod_name == "bbbb"
    store.put(record("c2"))  # a change made on top of the other writer's, not of what was known
    assert {k: r.pod_name for k, r in EndpointStore(sd).all().items()} == {"net/c1/eth0": "bbbb",
                                                                           "net/c2/eth0": "web-0"}


def test_a_file_replaced_by_one_of_the_same_size_and_times_is_read_again(tmp_path):
    """The identity includes the inode, which cannot be reused while it is remembered."""
    sd = str(tmp_path)
    path = tmp_path / "endpoints.json"
    store = EndpointStore(sd)
    store.put(record("c1", pod="aaaa"))
    assert store.get("net/c1/eth0").pod_name == "aaaa"
    st = path.stat()
    other = tmp_path / "other"
    other.write_bytes(path.read_bytes().replace(b"aaaa", b"bbbb"))
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)
    assert store.get("net/c1/eth0").pod_name == "bbbb"


def test_a_file_read_between_a_writers_lines_and_its_count_is_not_reused(tmp_path, monkeypatch):
    """The count is written in place: within one tick of a coarse clock the file's times do not
    change, and its size did not. So a read that saw lines past the count is never reused."""
    monkeypatch.setattr(journal, "_identity", lambda st: (st.st_dev, st.st_ino, st.st_size))  # a coarse clock
    store = EndpointStore(str(tmp_path))
    path = tmp_path / "endpoints.json"
    store.put(record("c1"))
    store.put(record("c2"))
    n = lines(path)[0]["changes"]
    with open(path, "ab") as f:  # another writer's lines, its count not written yet
        f.write(json.dumps({"n": n + 1, "t": "endpoints", "k": "net/c3/eth0", "v": record("c3").to_dict()}).encode()
                + b"\n")
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0"]
    with open(path, "r+b") as f:  # its count, in place: the same size
        f.seek(12)
        f.write(b"%10d" % (n + 1))
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0", "net/c3/eth0"]
    store.put(record("c4"))  # written after the other writer's change, never over it
    forget_all()
    assert sorted(store.all()) == ["net/c1/eth0", "net/c2/eth0", "net/c3/eth0", "net/c4/eth0"]


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


def test_a_file_corrupted_behind_a_warm_process_is_reported_corrupt(tmp_path):
    store = EndpointStore(str(tmp_path))
    store.put(record("c1"))
    assert store.all()
    path = tmp_path / "endpoints.json"
    path.write_bytes(path.read_bytes()[:40])  # truncated by someone else
    with pytest.raises(CorruptState):
        store.all()
    assert path.read_bytes()[:40] == path.read_bytes()  # a read moves nothing
    store.put(record("c2"))  # a writer moves it aside and starts afresh
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
