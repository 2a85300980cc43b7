"""The durable IPAM state: `<stateDir>/ipam.json` under its flock, and the corruption guard.

The lock is held only for one read-modify-write of the document (never around a metadata
query). A document with the right kind and version but a body of the wrong shape is as
unreadable as bad JSON: it is moved aside like any other corrupt file.

Corruption guard: once a corrupt `ipam.json` was moved aside, the fresh, empty document that
follows knows nothing of the addresses running pods hold. Handing out addresses from it would
duplicate them, so ADD is refused while a `ipam.json.corrupt-*` file exists that the document's
`recovered` list does not name. `vnetctl ipam --rebuild` rebuilds the allocations (from the vnet
plugin's `endpoints.json`) and adds the file names to `recovered`; the files are never deleted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # typing itself is not imported at run time (plugin start-up cost)
if TYPE_CHECKING:
    from typing import TypeVar

from ..cni.errors import CNIError, STATE_CORRUPT
from ..node.layout import IPAM_FILE, NodeLayout
from ..state.journal import JournaledDocument
from .model import KIND, Allocation, Cooling, IpamState

if TYPE_CHECKING:
    T = TypeVar("T")
CORRUPT_PREFIX = IPAM_FILE + ".corrupt-"


class _IpamDocument(JournaledDocument):
    """ipam.json read as an IpamState, kept as a journal (state/journal.py): a call appends the
    allocations and cooling entries it changed (and the pool and refresh fields when they
    changed); a process reads again only what another one wrote."""

    tables = ("allocations", "cooling")

    def __init__(self, path: str) -> None:
        super().__init__(path, KIND, lambda: IpamState.from_doc({}).to_doc())

    def _build(self, doc: dict) -> IpamState:
        return IpamState.from_doc(doc)

    def _fork(self, state: IpamState) -> IpamState:
        return state.fork()

    def _head(self, state: IpamState) -> dict:
        doc = state.to_doc(tables=False)
        del doc["kind"], doc["schemaVersion"]
        return doc

    def _head_key(self, state: IpamState) -> tuple:
        """The head's parts as they are (no ISO times formatted, no pool copied): compared on
        every change, turned into JSON only when they differ."""
        r = state.refresh
        return (state.pool, state.pool6, state.fetched_at, state.pool_source, r.last_attempt, r.last_outcome,
                r.last_error, r.source, r.config, tuple(state.recovered))

    def _tables(self, state: IpamState) -> dict[str, dict]:
        return {"allocations": state.allocations, "cooling": state.cooling}

    def _row_doc(self, name: str, record: Allocation | Cooling) -> dict:
        return record.to_doc()


class StateNeedsRebuild(CNIError):
    def __init__(self, state_dir: str, corrupt: list[str]) -> None:
        super().__init__(
            STATE_CORRUPT,
            f"refusing to hand out addresses: the IPAM state in {state_dir} was found corrupt "
            f"(kept as {', '.join(corrupt)}), so the addresses running pods hold are unknown; "
            f"run `vnetctl ipam --state-dir {state_dir} --rebuild`",
        )
        self.corrupt = corrupt


class IpamStore:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = NodeLayout(state_dir).ipam_file
        self._doc = _IpamDocument(self.path)

    def read(self) -> IpamState:
        """A lock-free snapshot, no side effects (CorruptState if the file is unreadable; it
        stays in place)."""
        return self._doc.read()

    def document(self) -> dict:
        """The state as one JSON document (IpamState.to_doc's form); a read, like read()."""
        return self._doc.document()

    def read_for_update(self) -> IpamState:
        """read() for a caller about to write (ADD): an unreadable file is moved aside under the
        lock (CorruptState naming where), which arms the corruption guard."""
        return self._doc.read_for_update()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[IpamState]:
        """Read-modify-write under the lock. Written only if the state changed; an exception in
        the body writes nothing."""
        with self._doc.transaction() as state:  # the bytes are compared: unchanged means unwritten
            yield state

    def apply(self, change: Callable[[IpamState], T]) -> T:
        """change(state) as one read-modify-write; concurrent calls in one process (vnetd)
        share a single write (group commit). Raises what change raised, with no trace left."""
        return self._doc.apply(change)

    def corrupt_files(self) -> list[str]:
        try:
            names = os.listdir(self.state_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith(CORRUPT_PREFIX))

    def unrecovered(self, state: IpamState) -> list[str]:
        """Corrupt files no rebuild has accounted for yet."""
        done = set(state.recovered)
        return [n for n in self.corrupt_files() if n not in done]

    def require_recovered(self, state: IpamState) -> None:
        pending = self.unrecovered(state)
        if pending:
            raise StateNeedsRebuild(self.state_dir, pending)
