"""vnetd's memory settings: malloc arenas capped before its threads start, and the serving
process never imports the argument parser (typer and what it pulls in)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vnetcni.daemon.main import MALLOC_ARENAS

# 16 threads that each hold malloc'd memory (objects over 512 bytes bypass Python's own
# allocator) at the same time; glibc then reports one "Arena N:" block per arena in use.
THREADS = """
import ctypes, sys, threading
from vnetcni.daemon.main import limit_malloc_arenas
applied = limit_malloc_arenas() if sys.argv[1] == "capped" else None
gate = threading.Barrier(17)
def work():
    keep = [bytearray(4096) for _ in range(64)]
    gate.wait()
    gate.wait()
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads:
    t.start()
gate.wait()
sys.stderr.flush()
ctypes.CDLL(None).malloc_stats()
gate.wait()
for t in threads:
    t.join()
print(applied)
"""


def arenas(mode: str, arena_max: str = "") -> tuple[int, str]:
    """(arenas glibc reports, what limit_malloc_arenas returned) with 16 threads holding memory."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if arena_max:
        env["MALLOC_ARENA_MAX"] = arena_max
    proc = subprocess.run([sys.executable, "-c", THREADS, mode], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return sum(line.startswith("Arena ") for line in proc.stderr.splitlines()), proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_worker_threads_share_the_capped_arenas():
    uncapped, _ = arenas("plain")
    capped, applied = arenas("capped")
    assert applied == "True"
    assert capped <= MALLOC_ARENAS
    assert uncapped > MALLOC_ARENAS  # the check can tell: without the cap each thread gets its own


def test_an_operators_malloc_arena_max_wins():
    count, applied = arenas("capped", "3")
    assert applied == "False"  # left to glibc, which reads the variable itself
    assert count <= 3


def test_the_serving_stage_runs_without_the_argument_parser(tmp_path):
    """What vnetd's argument stage hands over (VNETD_SERVE_ARGS) is served as is, and typer,
    click, rich and pydantic are never imported by the serving process."""
    code = """
import sys
import vnetcni.daemon.main as m
m.serve = lambda **kw: print(sorted(kw.items()), sorted(n for n in ("typer", "click", "rich", "pydantic")
                                                       if n in sys.modules)) or 0
m.run()
"""
    env = dict(os.environ, VNETD_SERVE_ARGS='{"args": {"state_dir": "/x", "metrics_port": 9}, "name": "vnetd"}')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[('metrics_port', 9), ('state_dir', '/x')] []"


@pytest.mark.parametrize("text", ["[1, 2", "[1, 2]", '{"state_dir": "/x"}', '{"args": {"state_dir": "/x", "colour": "red"}}'])
def test_bad_serve_args_are_a_clear_error(text):
    env = dict(os.environ, VNETD_SERVE_ARGS=text)
    proc = subprocess.run([sys.executable, "-m", "vnetcni.daemon.main"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 2
    assert "VNETD_SERVE_ARGS" in proc.stderr and "Traceback" not in proc.stderr


# A worker thread that holds a few state-file-sized buffers at once and frees them, again and again, as vnetd's
# calls do: the minor page faults it takes show whether glibc hands the memory back each time.
REUSE = """
import resource, sys, threading
from vnetcni.daemon.main import keep_large_buffers, limit_malloc_arenas
limit_malloc_arenas()
applied = keep_large_buffers() if sys.argv[1] == "kept" else None
faults = []
def work():
    for _ in range(20):
        [bytearray(160 * 1024) for _ in range(4)]
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(200):
        [bytearray(160 * 1024) for _ in range(4)]
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(applied, faults[0])
"""


def page_faults(mode: str, **env_extra: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", REUSE, mode], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    applied, faults = proc.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_state_file_sized_buffers_are_reused_not_faulted_in_on_every_call():
    _, plain = page_faults("plain")
    applied, kept = page_faults("kept")
    assert applied == "True"
    assert plain > 200 * 10  # the check can tell: without it every buffer is faulted in anew
    assert kept < 200  # reused: no fault per buffer


def test_an_operators_malloc_thresholds_win():
    applied, _ = page_faults("kept", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"
