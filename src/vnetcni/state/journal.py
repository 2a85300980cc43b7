"""A state document kept as a journal: a snapshot, then one appended line per change.

ipam.json and endpoints.json (schemaVersion 2) change on every ADD and DEL. Rewritten whole,
each change cost as much as the node has pods (encoding, writing and renaming ~160 KB of
endpoints with 250 pods); appended, a change costs the same with 5 pods or 250. The file is JSON
Lines (`jq -c . ipam.json` reads it):

    {"changes":          3, "kind": "vnet-endpoints", "rows": 2, "schemaVersion": 2}
    {"t": "endpoints", "k": "net/c1/eth0", "v": {...}}           the snapshot: `rows` rows
    {"t": "endpoints", "k": "net/c2/eth0", "v": {...}}           (table, key, value)
    {"n": 1, "t": "endpoints", "k": "net/c3/eth0", "v": {...}}   `changes` changes, numbered:
    {"n": 2, "t": "endpoints", "k": "net/c1/eth0", "v": null}    a row put or removed (null),
    {"n": 3, "head": {"refresh": {...}}}                         or some of the other fields set

The header holds the document's fields other than its tables, and `changes`, padded to a fixed
width, is the count of changes committed. A change is written under the document's flock in two
steps: its lines after the last committed one, fsync; then the count, in place, fdatasync. So a
crash at any point leaves either the change committed or lines past the count (and perhaps a
torn last line), which readers ignore and the next writer overwrites: the change was never
acknowledged. And a file that lost committed lines (truncated) is shorter than its count says,
which makes it unreadable, like a bad line anywhere, a gap in the numbering or NUL bytes
(durable.py: CorruptState, moved aside by a writer, never taken for a smaller state).

Once the changes outnumber half the snapshot's rows (and MIN_CHANGES), or their bytes half the
snapshot's (and MIN_BYTES: vnetd's refresher sets the refresh record every few seconds), a
writer compacts: it
writes the whole state as a new snapshot to a temporary file, fsyncs it, renames it over the
journal and fsyncs the directory (durable.atomic_write). A change costs O(1) amortised.

A file holding the document in its whole form, one JSON object (what every file held up to
schemaVersion 1, and what `document()` gives), is read as it is and rewritten as a journal by
the first change (the migration). Code from before journals refuses a journal (not one JSON
document) instead of misreading it.

What a process read or wrote is kept (by path) with the file's identity: device, inode, size,
mtime and ctime, and an open descriptor of that inode, so no other file can take its number
while it is remembered. Every change of ours moves the mtime and the size (a change) or the
inode (a compaction, a file moved aside), so a read whose stat(2) shows the same identity takes
a copy of what is known instead of reading the file (vnetd: no read at all for its own writes);
any other identity (another process wrote, an operator edited or replaced it) reads and parses
the file again. A change writes only the rows whose record is not the very object read (records
in a state table are never changed in place: a change replaces the record).
"""

from __future__ import annotations

import contextlib
import os
import threading
from itertools import compress
from operator import is_not

TYPE_CHECKING = False  # typing itself is not imported at run time (plugin start-up cost)
if TYPE_CHECKING:
    from typing import Any

from ..cni.errors import CNIError, IO_FAILURE
from ..cni import fastjson as json
from .durable import CorruptState, DurableDocument, read_all

LEGACY_VERSION = 1  # one JSON document, rewritten whole (read; migrated by the first change)
JOURNAL_VERSION = 2
MIN_CHANGES = 64  # changes a journal takes before it is compacted, however few its rows
MIN_BYTES = 64 << 10  # bytes of changes a journal takes before it is compacted, however small its snapshot
_COUNT_AT = len(b'{"changes": ')  # where the header's count of changes is, padded to _COUNT_WIDTH
_COUNT_WIDTH = 10
_META = ("changes", "kind", "rows", "schemaVersion")  # the header's own fields


class _Held:
    """An open read-only descriptor of the inode a snapshot came from: while it is open the
    inode is not freed, so no other file can get its number. Closed when the snapshot is dropped
    (by reference counting: never closed twice, never while another thread holds the snapshot)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _identity(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Snapshot:
    """What the file held when this process last read or wrote it. Never changed: a newer one
    replaces it (threads may be reading this one)."""

    __slots__ = ("identity", "held", "obj", "head", "changes", "rows", "base", "end", "legacy")

    def __init__(self, identity: tuple | None, held: _Held, obj: Any, head: object, changes: int, rows: int,
                 base: int, end: int, legacy: bool) -> None:
        self.identity = identity  # None: not to be reused (the file changed while it was read)
        self.held = held
        self.obj = obj  # what _build made of it: copied (_fork) for every reader
        self.head = head  # _head_key of obj: what tells whether a change changed the fields other than the tables
        self.changes = changes  # change lines after the snapshot's rows
        self.rows = rows  # rows of the snapshot
        self.base = base  # where the snapshot ends and the changes start
        self.end = end  # where the last complete line ends (what follows is a torn append)
        self.legacy = legacy  # not a journal with a count this code can update: the next change rewrites it


_snapshots: dict[str, _Snapshot] = {}
_SNAPSHOTS_MAX = 64  # paths remembered (vnetd serves a handful of state directories)
_snapshots_lock = threading.Lock()


# Per path, what the file held before a change this process is writing now (under the lock, so
# nobody else changes the file meanwhile): a reader in another thread that finds the file
# half-written takes that (the change is not acknowledged yet) instead of reading it all again.
_writing: dict[str, _Snapshot] = {}


def _remember(path: str, snap: _Snapshot) -> None:
    with _snapshots_lock:
        if path not in _snapshots and len(_snapshots) >= _SNAPSHOTS_MAX:
            _snapshots.clear()
        _snapshots[path] = snap


def _forget(path: str) -> None:
    with _snapshots_lock:
        _snapshots.pop(path, None)


def _line(n: int, table: str, key: str, value: object) -> str:
    dumps = json.dumps
    return f'{{"n": {n}, "t": {dumps(table)}, "k": {dumps(key)}, "v": {dumps(value, sort_keys=True)}}}'


def _row_line(table: str, key: str, value: object) -> str:
    dumps = json.dumps
    return f'{{"t": {dumps(table)}, "k": {dumps(key)}, "v": {dumps(value, sort_keys=True)}}}'


class JournaledDocument(DurableDocument):
    """A DurableDocument kept as a journal. A subclass names its tables (`tables`: dicts of
    frozen records by key inside the object `_build` makes) and says how to see its object as
    parts: `_head` (the fields other than the tables, as JSON), `_tables` (name -> the object's
    own dict, not a copy), `_row_doc` (a record as JSON), and `_fork` (a copy a reader may
    change: new containers, the same records). `_build` reads the document in its whole form
    ({kind, schemaVersion, head fields..., table: {key: row}}), as before journals."""

    tables: tuple[str, ...] = ()

    def __init__(self, path: str, kind: str, empty) -> None:
        super().__init__(path, kind, JOURNAL_VERSION, empty)

    # --- what a subclass says ----------------------------------------------------------------
    def _head(self, obj: Any) -> dict:
        raise NotImplementedError

    def _head_key(self, obj: Any) -> object:
        """Equal for two objects whose _head is equal, and cheaper to make (default: _head)."""
        return self._head(obj)

    def _tables(self, obj: Any) -> dict[str, dict]:
        raise NotImplementedError

    def _row_doc(self, table: str, record: Any) -> dict:
        raise NotImplementedError

    def _fork(self, obj: Any) -> Any:
        raise NotImplementedError

    # --- reading -----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[_Snapshot | None, str]:
        """(what the file holds now, "") or (None, why it is unreadable); (None, "") for no file.
        The remembered snapshot when the file is still the one it came from."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None, ""
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot read {self.path}: {exc.strerror}") from None
        snap = _snapshots.get(self.path)
        if snap is not None and snap.identity == _identity(st):
            return snap, ""
        before = _writing.get(self.path)
        if before is not None:
            return before, ""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, ""
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot read {self.path}: {exc.strerror}") from None
        held = _Held(fd)
        for _ in range(3):  # a file that looks unreadable while a writer changes it is read again
            try:
                before = os.fstat(fd)
                raw = os.pread(fd, before.st_size + 1, 0) if before.st_size < 1 << 24 else _pread_all(fd)
                st = os.fstat(fd)
            except OSError as exc:
                raise CNIError(IO_FAILURE, f"cannot read {self.path}: {exc.strerror}") from None
            snap, why = self._parse_file(raw, held)
            if _identity(st) == _identity(before) and st.st_size == len(raw):
                break  # nobody wrote while it was read
            if snap is not None:
                return snap, ""  # a good read, but of a file that was changing: not reused
        if snap is not None:
            snap.identity = _identity(st)
            if snap.end == st.st_size:
                # Reused only when every byte is committed: a writer between its lines and its
                # count (in place, perhaps within the same mtime tick) changes the file's
                # meaning, not its size; a file with lines past its count is read again.
                _remember(self.path, snap)
        return snap, why

    def _parse_file(self, raw: bytes, held: _Held) -> tuple[_Snapshot | None, str]:
        first = raw[:raw.find(b"\n")] if b"\n" in raw else raw
        try:
            header = json.loads(first) if first.strip() and b"\x00" not in first else None
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict) or "rows" not in header:
            return self._parse_whole(raw, held)  # one JSON document (or not ours at all)
        if header.get("kind") != self.kind:
            return None, f"it is not a {self.kind} document"
        if header.get("schemaVersion") != JOURNAL_VERSION:
            return None, f"schema version {header.get('schemaVersion')!r}, expected {JOURNAL_VERSION}"
        try:
            head, tables, changes, rows, base, end = self._replay(raw, header)
            obj = self._build({**head, "kind": self.kind, "schemaVersion": JOURNAL_VERSION, **tables})
        except ValueError as exc:
            return None, f"its body has the wrong shape: {exc}"
        counted = raw[:_COUNT_AT] == b'{"changes": ' and raw[_COUNT_AT + _COUNT_WIDTH:_COUNT_AT + _COUNT_WIDTH + 2] == b", "
        return _Snapshot(None, held, obj, self._head_key(obj), changes, rows, base, end, not counted), ""

    def _parse_whole(self, raw: bytes, held: _Held) -> tuple[_Snapshot | None, str]:
        """The document in its whole form (schemaVersion 1 files; `document()` written back)."""
        doc, why = self._decode(raw, (LEGACY_VERSION, JOURNAL_VERSION))
        if why:
            return None, why
        try:
            obj = self._build(doc)
        except ValueError as exc:
            return None, f"its body has the wrong shape: {exc}"
        return _Snapshot(None, held, obj, self._head_key(obj), 0, 0, len(raw), len(raw), True), ""

    def _replay(self, raw: bytes, header: dict) -> tuple[dict, dict, int, int, int, int]:
        """The document's parts from the lines: (head, {table: {key: row}}, changes, rows, where
        the changes start, where they end).
        ValueError naming the line when one does not read as this format."""
        rows, changes = header.get("rows"), header.get("changes")
        for name, value in (("rows", rows), ("changes", changes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"the header's {name} is {value!r}")
        lines = raw.split(b"\n", rows + changes + 1)
        if len(lines) < rows + changes + 2:  # the header, the lines it counts, what follows them
            raise ValueError(f"it holds fewer lines than the {rows} rows and {changes} changes its header "
                             "counts (truncated)")
        body = lines[1:-1]  # what follows the last line counted: an append never committed
        end = len(raw) - len(lines[-1])
        base = sum(map(len, lines[:rows + 1])) + rows + 1
        if b"\x00" in raw[:end]:
            raise ValueError("it holds NUL bytes")
        try:
            entries = json.loads(b"[" + b",".join(body) + b"]")
        except (ValueError, RecursionError):
            bad = next((i for i, line in enumerate(body) if not _parses(line)), 0)
            raise ValueError(f"line {bad + 2} is not valid JSON") from None
        head = {k: v for k, v in header.items() if k not in _META}
        tables: dict[str, dict] = {name: {} for name in self.tables}
        for i, entry in enumerate(entries):
            where = f"line {i + 2}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} is not an object")
            if i >= rows and entry.get("n") != i - rows + 1:
                raise ValueError(f"{where} is change {entry.get('n')!r}, expected {i - rows + 1}")
            if i >= rows and "head" in entry:
                if not isinstance(entry["head"], dict):
                    raise ValueError(f"{where}: head is not an object")
                head.update(entry["head"])
                continue
            table, key, value = tables.get(entry.get("t")), entry.get("k"), entry.get("v", 0)
            if table is None or not isinstance(key, str):
                raise ValueError(f"{where} names no table row")
            if isinstance(value, dict):
                if i < rows and key in table:
                    raise ValueError(f"{where}: row {key!r} is in the snapshot twice")
                table[key] = value
            elif value is None and i >= rows:
                table.pop(key, None)
            else:
                raise ValueError(f"{where}: the value of row {key!r} is not an object")
        return head, tables, changes, rows, base, end

    def _state(self, locked: bool) -> tuple[Any, _Snapshot | None]:
        snap, why = self._snapshot()
        if why and not locked:  # read once more: a writer may have been in the middle of its count
            snap, why = self._snapshot()
        if why:
            if locked:
                _forget(self.path)
                self._move_aside(why)
            raise CorruptState(self.path, None, why)
        return self._again(snap), snap

    def _again(self, snap: _Snapshot | None) -> Any:
        return self._empty_obj() if snap is None else self._fork(snap.obj)

    def document(self) -> dict:
        """The document in its whole form, one JSON object ({kind, schemaVersion, the other
        fields, each table as {key: row}}: what a schemaVersion 1 file held): for tools and
        tests that want the state as JSON. A read: CorruptState when the file is unreadable."""
        obj = self.read()
        tables = self._tables(obj)
        doc = {**self._head(obj), "kind": self.kind, "schemaVersion": self.schema_version}
        for name in self.tables:
            doc[name] = {key: self._row_doc(name, rec) for key, rec in sorted(tables[name].items())}
        return doc

    # --- writing -----------------------------------------------------------------------------
    def _commit(self, obj: Any, snap: _Snapshot | None) -> None:
        """Append what obj changed since snap (what was read under the lock); nothing when it
        changed nothing. A new file, a legacy one or a long journal is compacted instead."""
        head = self._head_key(obj)
        before = self._empty_obj() if snap is None else snap.obj
        changes = self._changes(self._tables(before), self._tables(obj))
        if head != (self._head_key(before) if snap is None else snap.head):
            new, old = self._head(obj), self._head(before)
            changes.append({k: new.get(k) for k in sorted(new.keys() | old.keys()) if new.get(k) != old.get(k)})
        if not changes:
            return
        if snap is not None:
            _writing[self.path] = snap
        try:
            self._write_changes(obj, snap, head, changes)
        finally:
            _writing.pop(self.path, None)

    def _write_changes(self, obj: Any, snap: _Snapshot | None, head: object, changes: list) -> None:
        if snap is None or snap.legacy or snap.changes + len(changes) > max(snap.rows // 2, MIN_CHANGES) \
                or snap.changes + len(changes) >= 10 ** _COUNT_WIDTH or not self._append(snap, obj, head, changes):
            self._compact(obj, head)

    @staticmethod
    def _changes(old: dict[str, dict], new: dict[str, dict]) -> list:
        """(table, key, record or None) for each row put or removed: the records that are not
        the very objects read, found by C loops (a change of one row among 250 encodes one)."""
        out: list = []
        for name in sorted(new):
            before, after = old.get(name) or {}, new[name]
            changed = list(compress(after, map(is_not, after.values(), map(before.get, after))))
            out += [(name, k, after[k]) for k in sorted(changed)]
            added = sum(k not in before for k in changed)
            if len(after) - added != len(before):  # some key of before is gone
                out += [(name, k, None) for k in sorted(before.keys() - after.keys())]
        return out

    def _append(self, snap: _Snapshot, obj: Any, head: object, changes: list) -> bool:
        """Write the changes after the last committed one, then commit them; False (nothing
        written) when they would take the journal past its bytes (then it is compacted)."""
        n = snap.changes
        pieces = []
        for change in changes:
            n += 1
            if isinstance(change, dict):
                pieces.append(f'{{"n": {n}, "head": {json.dumps(change, sort_keys=True)}}}')
            else:
                table, key, record = change
                pieces.append(_line(n, table, key, None if record is None else self._row_doc(table, record)))
        data = ("\n".join(pieces) + "\n").encode()
        if snap.end + len(data) - snap.base > max(snap.base // 2, MIN_BYTES):
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            _forget(self.path)
            raise CNIError(IO_FAILURE, f"cannot write {self.path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if _identity(st) != snap.identity:  # replaced or written by someone not taking the lock
                raise OSError(0, "it changed while its lock was held; try again")
            if st.st_size > snap.end:
                os.ftruncate(fd, snap.end)  # lines an append left uncommitted (its writer died)
            at = snap.end
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, at)
                view, at = view[written:], at + written
            os.fsync(fd)  # the lines (and the file's size) first,
            os.pwrite(fd, b"%*d" % (_COUNT_WIDTH, n), _COUNT_AT)  # then the count that commits them
            os.fdatasync(fd)
            st = os.fstat(fd)
        except OSError as exc:
            _forget(self.path)  # the lines past the count are ignored, and overwritten next time
            raise CNIError(IO_FAILURE, f"cannot write {self.path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        _remember(self.path, _Snapshot(_identity(st), snap.held, self._fork(obj), head, n, snap.rows, snap.base,
                                       snap.end + len(data), False))
        return True

    def _compact(self, obj: Any, head: object) -> None:
        """The whole state as a new snapshot, in place of the file (atomic_write)."""
        tables = self._tables(obj)
        rows = sum(map(len, tables.values()))
        header = json.dumps({**self._head(obj), "kind": self.kind, "schemaVersion": JOURNAL_VERSION, "rows": rows},
                            sort_keys=True)
        pieces = ['{"changes": %*d, %s' % (_COUNT_WIDTH, 0, header[1:])]
        for name in sorted(tables):
            table = tables[name]
            pieces += [_row_line(name, key, self._row_doc(name, table[key])) for key in sorted(table)]
        data = ("\n".join(pieces) + "\n").encode()
        _forget(self.path)
        self._write_bytes(data)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # read again next time
        held = _Held(fd)
        st = os.fstat(fd)
        if st.st_size == len(data):
            _remember(self.path, _Snapshot(_identity(st), held, self._fork(obj), head, 0, rows, len(data), len(data),
                                           False))

    def _encode_obj(self, obj: Any) -> bytes:
        raise NotImplementedError("a journal is written by _commit")


def _pread_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return read_all(fd)


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True
