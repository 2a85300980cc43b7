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
    the pure-Python one, ~3x slower on a 110-pod node, on every ADD and DEL)."""
    dumps = json.dumps
    parts = []
    for key in sorted(doc):
        value = doc[key]
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            rows = ",\n".join(f"    {dumps(k)}: {dumps(v, sort_keys=True)}" for k, v in sorted(value.items()))
            parts.append(f"  {dumps(key)}: {{\n{rows}\n  }}")
        else:
            parts.append(f"  {dumps(key)}: {dumps(value, sort_keys=True)}")
    return ("{\n" + ",\n".join(parts) + "\n}\n").encode()


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
    """One JSON document with a `kind` and a `schemaVersion`."""

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

    def _decode(self, raw: bytes) -> tuple[dict | None, str]:
        """(document, "") or (None, why it is unreadable); the JSON is parsed once. Subclasses
        may add checks of the body's shape (call this first)."""
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
        if doc.get("schemaVersion") != self.schema_version:
            return None, f"schema version {doc.get('schemaVersion')!r}, expected {self.schema_version}"
        return doc, ""

    def _parse(self, raw: bytes) -> dict:
        """Parse under the lock; an unreadable file is moved aside (only a lock holder may move it)."""
        doc, why = self._decode(raw)
        if why:
            self._move_aside(why)
        return doc

    def _read_raw(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CNIError(IO_FAILURE, f"cannot read {self.path}: {exc.strerror}") from None

    def _read_locked(self) -> dict:
        raw = self._read_raw()
        return self._new() if raw is None else self._parse(raw)

    def read(self) -> dict:
        """The current document (a lock-free snapshot: renames are atomic). No side effects:
        an unreadable file raises CorruptState and stays where it is."""
        raw = self._read_raw()
        if raw is None:
            return self._new()
        doc, why = self._decode(raw)
        if why:
            raise CorruptState(self.path, None, why)
        return doc

    def read_for_update(self) -> dict:
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
    def transaction(self) -> Iterator[dict]:
        """Read-modify-write under the lock; written only if the body changed the document."""
        with self.locked():
            raw = self._read_raw()
            doc = self._new() if raw is None else self._parse(raw)
            before = self._encode(self._new()) if raw is None else raw
            yield doc
            data = self._encode(doc)
            if data != before:  # files are always written in this encoding: same bytes, same document
                self._write_bytes(data)

    def apply(self, change: Callable[[Any], Any]) -> Any:
        """change(obj) in a read-modify-write, with group commit: concurrent callers in this
        process (vnetd's workers) that change the same file share one lock acquisition, one
        read, one write and one fsync. Returns what change returned, or raises what it raised;
        a change that raises leaves no trace (the others are applied again to a fresh read).
        obj is what `_load` makes of the document (the document itself unless a subclass says)."""
        return _combiner(self.path).submit(self, change)

    def _load(self, doc: dict) -> Any:
        return doc

    def _dump(self, obj: Any) -> dict:
        return obj

    def _run_batch(self, batch: list["_Pending"]) -> None:
        with self.locked():
            raw = self._read_raw()
            doc = self._new() if raw is None else self._parse(raw)
            before = self._encode(self._new()) if raw is None else raw
            obj = self._load(doc)
            done: list[_Pending] = []
            for item in batch:
                try:
                    item.result = item.change(obj)
                except BaseException as exc:  # isolate it: replay the others on a fresh read
                    item.error = exc
                    obj = self._load(self._new() if raw is None else self._parse(raw))
                    for ok in done:
                        ok.result = ok.change(obj)
                else:
                    done.append(item)
            if done:
                data = self._encode(self._dump(obj))
                if data != before:
                    self._write_bytes(data)

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
    __slots__ = ("change", "result", "error", "finished")

    def __init__(self, change: Callable[[Any], Any]) -> None:
        self.change = change
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False


class _Combiner:
    """Per file: a caller that finds no batch running takes every change queued so far (its own
    among them), applies them as one batch and wakes the others; a caller whose change is still
    queued then leads the next batch. Across processes the file's flock serialises batches."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._leading = False

    def submit(self, document: DurableDocument, change):
        mine = _Pending(change)
        with self._cond:
            self._queue.append(mine)
            while not mine.finished:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                batch, self._queue = self._queue, []
                self._cond.release()
                try:
                    try:
                        document._run_batch(batch)
                    except BaseException as exc:  # the file itself (unreadable, I/O): all fail
                        for item in batch:
                            if item.error is None:
                                item.error = exc
                finally:
                    self._cond.acquire()
                    for item in batch:
                        item.finished = True
                    self._leading = False
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.result


_combiners: dict[str, _Combiner] = {}
_combiners_lock = threading.Lock()


def _combiner(path: str) -> _Combiner:
    with _combiners_lock:
        c = _combiners.get(path)
        if c is None:
            c = _combiners[path] = _Combiner()
        return c
