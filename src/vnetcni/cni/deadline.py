"""The deadline of the call this thread is handling, and whether its caller still waits.

vnetd serves each request on a worker thread inside `scope(deadline, gone)`: `deadline` is when
the caller stops waiting (time.monotonic()), `gone()` says whether it hung up already. Handlers
ask two things:

- `wait_until()`: how long a lock wait may last (the call's deadline, or None: the lock's own
  default) — waiting past it only produces an answer nobody reads;
- `commit_point()`: called where an ADD's work becomes the pod's (under the attachment lock,
  before answering): if the caller is gone or its deadline passed, it raises code 11 so the
  handler rolls back what it created instead of leaving an address allocated to a call the
  runtime saw fail.
vnetd also keeps the attachment's lock until the answer is on the caller's socket
(`hold_until_answered`), so an ADD whose answer cannot be delivered is undone before a retry of
it can see its result. Work the caller need not wait for (a new pod's gratuitous ARP) can be
left until then: `after_answer()`, done once a successful answer is delivered (by vnetd's
after-answer queue, soon after and off the answering worker: daemon/afteranswer.py; the work
checks by itself that what it acts on is still there), and dropped if the call failed or its
answer was not delivered.

Outside a scope (a plugin run in-process by the runtime, which kills it on its own timeout)
nothing is abandoned and lock waits use their default.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from .errors import CNIError, TRY_AGAIN_LATER

_local = threading.local()


class Call:
    __slots__ = ("deadline", "gone", "lock_timeout", "rolled_back", "created", "until_answered", "deferred")

    def __init__(self, deadline: float | None, gone: Callable[[], bool] | None,
                 hold_until_answered: bool = False) -> None:
        self.deadline = deadline  # time.monotonic() value
        self.gone = gone
        self.lock_timeout = ""  # the lock whose wait ran out (for vnetd's counters)
        self.rolled_back = False
        self.created = False  # the handler created what it answers (not a repeated ADD's answer)
        # Releases of the attachment locks, kept until the answer is delivered (None: released
        # as the handler returns): see answered().
        self.until_answered: list[Callable[[], None]] | None = [] if hold_until_answered else None
        # Work left until a successful answer is delivered, with what drops it otherwise
        # (after_answer(); None: not deferrable, the handler does it at once).
        self.deferred: list[tuple[Callable[[], None], Callable[[], None] | None]] | None = \
            [] if hold_until_answered else None

    def take_deferred(self) -> list[Callable[[], None]]:
        """The answer, a success, was delivered: the deferred work, in order, now the caller's
        to do (vnetd queues it: daemon/afteranswer.py); answered() no longer drops it."""
        work, self.deferred = self.deferred or [], None
        return [do for do, _drop in work]

    def run_deferred(self) -> list[BaseException]:
        """The answer, a success, was delivered: do the deferred work now, in order, each
        whatever the others do; returns what failed (the caller reports it)."""
        failed = []
        for do in self.take_deferred():
            try:
                do()
            except Exception as exc:
                failed.append(exc)
        return failed

    def answered(self) -> None:
        """The answer was delivered (or undone): deferred work not done by now is dropped (the
        call failed or nobody got its answer); then release what was kept for it, last first."""
        work, self.deferred = self.deferred or [], None
        for _do, drop in work:
            if drop is not None:
                with contextlib.suppress(Exception):  # never in the way of the releases below
                    drop()
        releases, self.until_answered = self.until_answered or [], None
        for release in reversed(releases):
            release()

    def abandoned(self) -> str:
        """Why the caller no longer waits for this call ("" while it does)."""
        if self.gone is not None and self.gone():
            return "the caller hung up"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "the call's deadline passed"
        return ""


@contextlib.contextmanager
def scope(deadline: float | None, gone: Callable[[], bool] | None = None,
          hold_until_answered: bool = False) -> Iterator[Call]:
    """hold_until_answered: the attachment locks the handler takes stay held (on this thread)
    after it returns, until call.answered(): vnetd delivers the answer, or undoes an ADD whose
    answer could not be delivered, before any other call for the attachment may start."""
    call = Call(deadline, gone, hold_until_answered)
    outer = getattr(_local, "call", None)
    _local.call = call
    try:
        yield call
    finally:
        _local.call = outer


def current() -> Call | None:
    return getattr(_local, "call", None)


def wait_until() -> float | None:
    call = getattr(_local, "call", None)
    return None if call is None else call.deadline


class Abandoned(CNIError):
    def __init__(self, why: str, undone: str) -> None:
        super().__init__(TRY_AGAIN_LATER, f"call abandoned: {why}; {undone}",
                         "nothing is kept for this call; retry it")


def abandoned() -> str:
    call = getattr(_local, "call", None)
    return "" if call is None else call.abandoned()


def commit_point(undone: str = "what it did was rolled back") -> None:
    """Raise Abandoned (code 11) if nobody waits for this call's answer any more (the caller
    undoes its work on the way out)."""
    call = getattr(_local, "call", None)
    why = "" if call is None else call.abandoned()
    if why:
        call.rolled_back = True
        raise Abandoned(why, undone)


def can_defer() -> bool:
    """Whether this thread's call can leave work until its answer is delivered (vnetd)."""
    call = getattr(_local, "call", None)
    return call is not None and call.deferred is not None


def after_answer(work: Callable[[], None], drop: Callable[[], None] | None = None) -> bool:
    """Do `work` once this call's answer is delivered, if it is a success (vnetd, soon after,
    from its after-answer queue; a failure of it is logged); otherwise `drop` is called instead. False
    outside such a call (a plugin run in-process): nothing is kept, the caller does it now."""
    call = getattr(_local, "call", None)
    if call is None or call.deferred is None:
        return False
    call.deferred.append((work, drop))
    return True


def note_created() -> None:
    """An ADD handler made something new (an allocation, a veth): if its answer cannot be
    delivered, vnetd undoes the call. A repeated ADD that only answers what exists is not undone."""
    call = getattr(_local, "call", None)
    if call is not None:
        call.created = True


def note_lock_timeout(path: str) -> None:
    call = getattr(_local, "call", None)
    if call is not None:
        call.lock_timeout = path
