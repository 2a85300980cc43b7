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
