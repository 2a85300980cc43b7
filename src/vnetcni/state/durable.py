"""A versioned JSON document on disk, changed only under a kernel flock.

Writes go to a temporary file that is fsynced and renamed over the old one, then the directory
is fsynced: a reader sees the old document or the new one, never half of either. A missing file
is an empty document. An unreadable one (NUL bytes, bad JSON, another schema, and an empty or
whitespace-only file: these writes never leave one, so it was truncated, and taking it for "no
allocations" would hand out every live pod's address again) raises CorruptState, so the caller fails safe with a clear error instead of handing out
addresses twice. Reads have no side effects: only a caller that writes (under the lock) moves an
unreadable file aside, to a name no other corrupt file has (`<name>.corrupt-<time>-<pid>[-n]`,
never deleted, never overwritten).
The lock is a separate `<name>.lock` file held with flock(2) (state/locks.py): released by the
kernel when the holder dies, so a crashed plugin can never leave a node blocked, and waited for
only until a deadline (then code 11, try again later), so a stuck holder cannot hang a call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # typing itself is not imported at run time (plugin start-up cost)
if TYPE_CHECKING:
    from typing import Any

from ..cni.errors import CNIError, IO_FAILURE, STATE_CORRUPT
from ..cni import fastjson as json  # json without `re` (plugin start-up)
from .locks import DEFAULT_TIMEOUT as DEFAULT_LOCK_TIMEOUT, flocked


class CorruptState(CNIError):
    """An unreadable state file; moved_to is where a writer moved it (None: left in place)."""

    def __init__(self, path: str, moved_to: str | None, why: str) -> None:
        where = (f"it was moved aside to {moved_to}" if moved_to else
                 "it is left in place (the next change of the node's state moves it aside)")
        super().__init__(
            STATE_CORRUPT,
            f"state file {path} was unreadable ({why}); {where}",
            "the node's state must be rebuilt before more addresses are handed out "
            "(see `vnetctl ipam --rebuild`)",
        )
        self.path = path
        self.moved_to = moved_to


def encode_document(doc: dict) -> bytes:
    """JSON with one line per entry of a table (a dict of objects, e.g. endpoints by key), keys
    sorted: readable and grep-able, and written by the C encoder (json's `indent` falls back to
    the pure-Python one, ~3x slower)."""
    return _join({key: _entry(key, value) for key, value in doc.items()})


def _row(key: str, value: object) -> str:
    """One row of a table: its key and its object on one line."""
    return f"    {json.dumps(key)}: {json.dumps(value, sort_keys=True)}"


def _entry(key: str, value: object) -> str:
    dumps = json.dumps
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        rows = ",\n".join(_row(k, v) for k, v in sorted(value.items()))
        return f"  {dumps(key)}: {{\n{rows}\n  }}"
    return f"  {dumps(key)}: {dumps(value, sort_keys=True)}"


def _join(parts: dict[str, str]) -> bytes:
    """The document from its entries."""
    return ("{\n" + ",\n".join(parts[key] for key in sorted(parts)) + "\n}\n").encode()


def read_all(fd: int) -> bytes:
    """Everything from fd's offset to the end of the file (one read when the size holds)."""
    parts = []
    want = os.fstat(fd).st_size + 1
    while chunk := os.read(fd, want):
        parts.append(chunk)
        want = 1 << 16
    return b"".join(parts)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:  # a full disk, an I/O error: no temp file is left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


_RENAME_NOREPLACE = 1


def rename_unique(src: str, base: str) -> str:
    """Rename src to base, or base-1, base-2, ... : the first name no file has. Never replaces
    a file (renameat2 RENAME_NOREPLACE; a hard link where the kernel lacks it)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    at_fdcwd = -100
    for n in range(10_000):
        dst = base if n == 0 else f"{base}-{n}"
        if renameat2 is not None:
            if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
                return dst
            err = ctypes.get_errno()
            if err == errno.EEXIST:
                continue
            if err not in (errno.ENOSYS, errno.EINVAL):
                raise OSError(err, os.strerror(err), src)
            renameat2 = None  # the file system or kernel cannot: fall back to link + unlink
        try:
            os.link(src, dst)
        except FileExistsError:
            continue
        os.unlink(src)
        return dst
    raise OSError(errno.EEXIST, "no free name for the corrupt file", base)


class DurableDocument:
    """One JSON document with a `kind` and a `schemaVersion`, rewritten whole by every change.

    A subclass may read it as an object of its own (`_build`, ValueError for a body of the wrong
    shape). The node's busy state files (ipam.json, endpoints.json) are kept as journals instead
    (state/journal.py: a change appends a line), through the same interface."""

    def __init__(self, path: str, kind: str, schema_version: int,
                 empty: Callable[[], dict]) -> None:
        self.path = path
        self.kind = kind
        self.schema_version = schema_version
        self._empty = empty
        self.lock_timeout = DEFAULT_LOCK_TIMEOUT

    @property
    def lock_path(self) -> str:
        return self.path + ".lock"

    def _new(self) -> dict:
        doc = self._empty()
        doc["kind"] = self.kind
        doc["schemaVersion"] = self.schema_version
        return doc

    def _move_aside(self, why: str) -> None:
        """Under the lock: rename the unreadable file to a name no file has yet, then raise."""
        base = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        try:
            moved = rename_unique(self.path, base)
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"state file {self.path} is unreadable ({why}) and cannot be "
                                       f"moved aside: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            fsync_dir(os.path.dirname(self.path) or ".")
        raise CorruptState(self.path, moved, why)

    def _decode(self, raw: bytes, versions: tuple[int, ...] = ()) -> tuple[dict | None, str]:
        """(document, "") or (None, why it is unreadable); the JSON is parsed once. `versions`:
        the schema versions read (default: this document's)."""
        if not raw.strip():
            return None, "it is empty (never written so: truncated)"
        if b"\x00" in raw:
            return None, "it holds NUL bytes"
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            return None, "it is not valid JSON"
        if not isinstance(doc, dict) or doc.get("kind") != self.kind:
            return None, f"it is not a {self.kind} document"
        if doc.get("schemaVersion") not in (versions or (self.schema_version,)):
            return None, f"schema version {doc.get('schemaVersion')!r}, expected {self.schema_version}"
        return doc, ""

    def _build(self, doc: dict) -> Any:
        """The object a reader gets for a decoded document (default: the document itself);
        ValueError when the body has the wrong shape."""
        return doc

    def _encode_obj(self, obj: Any) -> bytes:
        """The bytes of an object."""
        return self._encode(obj)

    def _empty_obj(self) -> Any:
        return self._build(self._new())

    def _decode_obj(self, raw: bytes) -> tuple[Any, str]:
        """(object, "") or (None, why the file is unreadable)."""
        doc, why = self._decode(raw)
        if why:
            return None, why
        try:
            return self._build(doc), ""
        except ValueError as exc:
            return None, f"its body has the wrong shape: {exc}"

    def _read_raw(self) -> bytes | None:
        """The file's bytes (None: no file), read through a plain descriptor: a buffered file
        object would add an isatty ioctl, two lseeks and a second fstat to every read."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot read {self.path}: {exc.strerror}") from None
        try:
            return read_all(fd)
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot read {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def _state(self, locked: bool) -> tuple[Any, Any]:
        """(the object, what was read: what _commit and _again need). An unreadable file raises
        CorruptState; under the lock (`locked`) it is first moved aside (only a lock holder may
        move it)."""
        raw = self._read_raw()
        if raw is None:
            return self._empty_obj(), None
        obj, why = self._decode_obj(raw)
        if why:
            if locked:
                self._move_aside(why)
            raise CorruptState(self.path, None, why)
        return obj, raw

    def _again(self, raw: bytes | None) -> Any:
        """A fresh object of what _state read (a batch replayed after a failed change)."""
        return self._empty_obj() if raw is None else self._decode_obj(raw)[0]

    def _read_locked(self) -> Any:
        return self._state(True)[0]

    def read(self) -> Any:
        """The current document (a lock-free snapshot: renames are atomic). No side effects:
        an unreadable file raises CorruptState and stays where it is."""
        return self._state(False)[0]

    def read_for_update(self) -> Any:
        """read() for a caller that is about to change the document: a file that looks
        unreadable is judged again under the lock and moved aside (CorruptState with moved_to).
        Two such callers never both move it, nor move a writer's fresh file by mistake."""
        try:
            return self.read()
        except CorruptState:
            with self.locked():
                return self._read_locked()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the document's flock for the body; waiting for it ends with code 11 after
        `lock_timeout` seconds (state/locks.py), never in a hang."""
        with flocked(self.lock_path, timeout=self.lock_timeout, purpose=f"the {self.kind} state"):
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """Read-modify-write under the lock; written only if the body changed the document."""
        with self.locked():
            obj, read = self._state(True)
            yield obj
            self._commit(obj, read)

    def _commit(self, obj: Any, raw: bytes | None) -> None:
        """Write obj unless its bytes are those read (raw; None: no file, the empty document)."""
        data = self._encode_obj(obj)
        before = raw if raw is not None else self._encode_obj(self._empty_obj())
        if data != before:  # files are always written in this encoding: same bytes, same document
            self._write_bytes(data)

    def apply(self, change: Callable[[Any], Any]) -> Any:
        """change(obj) in a read-modify-write, with group commit: concurrent callers in this
        process (vnetd's workers) that change the same file share one lock acquisition, one
        read, one write and one fsync. Returns what change returned, or raises what it raised;
        a change that raises leaves no trace (the others are applied again to a fresh read).
        obj is what `_build` makes of the document (the document itself unless a subclass says)."""
        return _combiner(self.path).submit(self, change)

    def _run_batch(self, batch: list["_Pending"]) -> None:
        with self.locked():
            obj, read = self._state(True)
            done: list[_Pending] = []
            for item in batch:
                try:
                    item.result = item.change(obj)
                except BaseException as exc:  # isolate it: replay the others on a fresh read
                    item.error = exc
                    obj = self._again(read)
                    for ok in done:
                        ok.result = ok.change(obj)
                else:
                    done.append(item)
            if done:
                self._commit(obj, read)

    def _encode(self, doc: dict) -> bytes:
        doc["kind"] = self.kind
        doc["schemaVersion"] = self.schema_version
        return encode_document(doc)

    def _write_bytes(self, data: bytes) -> None:
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot write {self.path}: {exc.strerror}") from None


# --- group commit ------------------------------------------------------------------------------
class _Pending:
    __slots__ = ("change", "result", "error", "finished", "wake")

    def __init__(self, change: Callable[[Any], Any]) -> None:
        self.change = change
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self.wake: threading.Lock | None = None  # held while its caller waits; released to wake it


class _Combiner:
    """Per file: a caller that finds no batch running takes every change queued so far (its own
    among them), applies them as one batch and wakes the others; a caller whose change is still
    queued then leads the next batch. Across processes the file's flock serialises batches.

    Each waiting caller sleeps on a lock of its own and is woken once: when its change is done,
    or to lead the next batch (only the first one still queued). A shared condition's
    notify_all() would wake every waiter after each batch, the next batch's too, each of them
    to take the GIL and go back to sleep: in a burst of ADDs, dozens of wake-ups per batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False

    def submit(self, document: DurableDocument, change):
        mine = _Pending(change)
        with self._lock:
            self._queue.append(mine)
            if self._leading:
                mine.wake = threading.Lock()
                mine.wake.acquire()
            else:
                self._leading = True
        if mine.wake is not None:
            mine.wake.acquire()  # released by a leader: done, or ours is first in the queue: lead
        if not mine.finished:
            self._lead(document, mine)
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _lead(self, document: DurableDocument, mine: _Pending) -> None:
        """Apply every queued change (the leader's among them) as one batch, then wake their
        callers and hand the lead to the first change queued meanwhile (if any)."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            document._run_batch(batch)
        except BaseException as exc:  # the file itself (unreadable, I/O): all fail
            for item in batch:
                if item.error is None:
                    item.error = exc
        finally:
            with self._lock:
                for item in batch:
                    item.finished = True
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._leading = False
            for item in batch:
                if item.wake is not None and item is not mine:
                    item.wake.release()
            if following is not None:
                following.wake.release()


_combiners: dict[str, _Combiner] = {}
_combiners_lock = threading.Lock()


def _combiner(path: str) -> _Combiner:
    with _combiners_lock:
        c = _combiners.get(path)
        if c is None:
            c = _combiners[path] = _Combiner()
        return c
