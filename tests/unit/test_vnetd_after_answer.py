"""vnetd's after-answer queue (daemon/afteranswer.py): work a served ADD left until after its
answer (a new pod's gratuitous ARP) is done off the answering worker, each piece once, in order,
a failure logged without stopping the rest, and whatever is queued is done when vnetd stops."""

from __future__ import annotations

import logging
import threading

from vnetcni.daemon.afteranswer import AfterAnswer


def test_queued_work_is_done_by_the_queues_thread_in_order():
    queue = AfterAnswer()
    queue.start()
    done, threads, finished = [], set(), threading.Event()

    def piece(n):
        def work():
            done.append(n)
            threads.add(threading.current_thread().name)
            if n == 5:
                finished.set()
        return work

    try:
        queue.submit([piece(1), piece(2)], "ADD a")
        queue.submit([piece(3)], "ADD b")
        queue.submit([], "ADD c")  # nothing left: nothing queued
        queue.submit([piece(4), piece(5)], "ADD d")
        assert finished.wait(10)  # a deadline for work that never runs, not a speed check
    finally:
        queue.stop()
    assert done == [1, 2, 3, 4, 5] and threads == {"vnetd-after-answer"}
    assert (queue.done, queue.failed) == (5, 0)


def test_a_failure_is_logged_and_the_rest_still_runs(caplog):
    queue = AfterAnswer()  # not started: the submitter does it (a Server used without vnetd's main)
    done = []

    def fails():
        raise OSError(19, "No such device")

    with caplog.at_level(logging.WARNING, logger="vnetd"):
        queue.submit([fails, lambda: done.append(2)], "ADD vntnet/c1/eth0")
    assert done == [2] and (queue.done, queue.failed) == (1, 1)
    assert "ADD vntnet/c1/eth0: after its answer: [Errno 19] No such device" in caplog.text


def test_stop_does_what_is_queued():
    queue = AfterAnswer()
    gate, done = threading.Event(), []
    queue.start()
    try:
        queue.submit([gate.wait], "ADD first")  # holds the queue's thread in its round
        queue.submit([lambda: done.append(1)], "ADD second")
    finally:
        gate.set()
        queue.stop()
    assert done == [1] and queue.done == 2
    queue.submit([lambda: done.append(2)], "ADD after stop")  # stopped: done by the submitter
    assert done == [1, 2]
