"""DurableDocument.apply: concurrent changes share writes, and a failing change leaves no trace."""

from __future__ import annotations

import os
import threading

import pytest

from vnetcni.state import durable
from vnetcni.state.durable import DurableDocument


def make(path: str) -> DurableDocument:
    return DurableDocument(path, "test", 1, lambda: {"items": {}})


@pytest.fixture
def writes(monkeypatch):
    count = [0]
    original = durable.DurableDocument._write_bytes

    def counting(self, data):
        count[0] += 1
        return original(self, data)

    monkeypatch.setattr(durable.DurableDocument, "_write_bytes", counting)
    return count


def test_concurrent_changes_all_land_in_fewer_writes(tmp_path, writes):
    path = str(tmp_path / "doc.json")
    gate = threading.Barrier(64)
    results = [None] * 64

    def worker(i: int) -> None:
        gate.wait()

        def change(doc):
            doc["items"][str(i)] = i
            return i * 2

        results[i] = make(path).apply(change)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [i * 2 for i in range(64)]
    assert make(path).read()["items"] == {str(i): i for i in range(64)}
    assert writes[0] < 64  # some changes shared a write
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_a_failing_change_leaves_no_trace_and_the_others_land(tmp_path):
    path = str(tmp_path / "doc.json")
    gate = threading.Barrier(40)
    outcome = {}

    def worker(i: int) -> None:
        def change(doc):
            doc["items"][f"partial{i}"] = True  # mutated before failing: must not be written
            if i % 5 == 0:
                raise ValueError(i)
            doc["items"][str(i)] = i

        gate.wait()
        try:
            make(path).apply(change)
            outcome[i] = "ok"
        except ValueError:
            outcome[i] = "error"

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    items = make(path).read()["items"]
    assert {i for i, o in outcome.items() if o == "error"} == set(range(0, 40, 5))
    assert {k for k in items if not k.startswith("partial")} == {str(i) for i in range(40) if i % 5}
    assert not {k for k in items if k.startswith("partial") and int(k[7:]) % 5 == 0}


def test_unchanged_document_is_not_rewritten(tmp_path, writes):
    path = str(tmp_path / "doc.json")
    make(path).apply(lambda doc: doc["items"].__setitem__("a", 1))
    assert writes[0] == 1
    make(path).apply(lambda doc: doc["items"].get("a"))
    assert writes[0] == 1


def test_unreadable_file_fails_the_change_and_is_moved_aside(tmp_path):
    path = tmp_path / "doc.json"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(durable.CorruptState):
        make(str(path)).apply(lambda doc: doc["items"].__setitem__("a", 1))
    assert any(p.name.startswith("doc.json.corrupt-") for p in tmp_path.iterdir())


def test_changes_queued_behind_a_batch_are_all_applied_by_one_next_leader(tmp_path, writes):
    """While a batch runs, every change that arrives waits; when it ends, one of them leads the
    next batch with all of them (each waiter is woken once, by its own lock)."""
    path = str(tmp_path / "doc.json")
    doc = make(path)
    running, release = threading.Event(), threading.Event()

    def slow(d):
        running.set()
        release.wait(30)
        d["items"]["first"] = 0

    first = threading.Thread(target=doc.apply, args=(slow,))
    first.start()
    assert running.wait(30)
    results = {}

    def worker(i: int) -> None:
        def change(d):
            d["items"][str(i)] = i
            return i

        results[i] = doc.apply(change)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    combiner = durable._combiner(path)
    while len(combiner._queue) < 20:  # all of them queued behind the running batch
        release.wait(0.01)
    release.set()
    first.join(30)
    for t in threads:
        t.join(30)
    assert results == {i: i for i in range(20)}
    assert writes[0] == 2  # the first batch, then the twenty together
    assert sorted(make(path).read()["items"]) == sorted(["first", *map(str, range(20))])
    assert not combiner._leading and not combiner._queue
