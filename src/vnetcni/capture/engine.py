"""The capture engine: tcpdump, run from the host inside the right network namespace.

Why tcpdump rather than our own AF_PACKET loop: it compiles and applies the BPF filter in the
kernel exactly as the operator knows it (and reports filter errors in its own words), it writes
standard pcap with the interface's real link type (Ethernet on a veth or bridge: we never
capture on `any`, which yields Linux cooked headers), it handles ring buffers and drop counters,
and it needs nothing inside the pod: `nsenter --net=PATH tcpdump` uses the host's binary with
the pod's or node's network namespace, so minimal images and non-root containers work.

tcpdump writes pcap to the file descriptor it is given (`-w -`), so the output file is opened by
us (owned by the caller, not by tcpdump's unprivileged user) or is our own stdout.
It runs in its own process group: Ctrl-C reaches only vnetctl, which stops tcpdump with SIGINT,
so tcpdump flushes and prints its counters, from which we report how many packets were written.
If vnetctl itself dies, tcpdump gets SIGINT as its parent-death signal: no capture outlives us.
The kernel clears that signal when a process changes its user or drops capabilities, so tcpdump
keeps its credentials (`-Z root`); with `-w` it only copies frames and never dissects them, so
its privilege drop protects little, while an orphaned, unbounded capture would cost a lot.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Callable

from .errors import BadInput, CaptureError
from .tools import nsenter_path, tcpdump_path

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_STAT = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)")


@dataclass
class CaptureStats:
    captured: int = 0
    received: int = 0
    dropped: int = 0
    returncode: int | None = None
    messages: list[str] = field(default_factory=list)


def tcpdump_argv(interface: str, bpf_filter: str = "", count: int | None = None,
                 netns: str | None = None) -> list[str]:
    """The command that captures on `interface` (in `netns`) and writes pcap to stdout."""
    if interface == "any":
        raise BadInput("capturing on 'any' yields Linux cooked headers, not Ethernet; "
                       "name the interface")
    argv = [tcpdump_path(), "-i", interface, "-w", "-", "-U", "--immediate-mode", "-n", "-Z", "root"]
    if count is not None:
        argv += ["-c", str(count)]
    if bpf_filter.strip():
        argv.append(bpf_filter)
    setpriv = shutil.which("setpriv")
    if setpriv:  # if vnetctl is killed outright, tcpdump still stops (and flushes) on its own
        argv = [setpriv, "--pdeathsig", "INT", "--"] + argv
    if netns:
        argv = [nsenter_path(), f"--net={netns}", "--"] + argv
    return argv


class Tcpdump:
    """One tcpdump writing pcap to `out_fd`, started and stopped deterministically."""

    def __init__(self, interface: str, out_fd: int, bpf_filter: str = "", count: int | None = None,
                 netns: str | None = None, on_message: Callable[[str], None] | None = None) -> None:
        self.interface = interface
        self.netns = netns
        self.argv = tcpdump_argv(interface, bpf_filter, count, netns)
        self.out_fd = out_fd
        self.on_message = on_message
        self.stats = CaptureStats()
        self.listening = threading.Event()
        self.heard_listening = False
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.out_fd,
                                         stderr=subprocess.PIPE, process_group=0)
        except OSError as exc:
            raise CaptureError(f"cannot run {self.argv[0]}: {exc.strerror}") from None
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            stat = _STAT.match(line)
            if stat:
                setattr(self.stats, {"captured": "captured", "received by filter": "received",
                                     "dropped by kernel": "dropped"}[stat.group(2)], int(stat.group(1)))
                continue
            if "listening on" in line:
                self.heard_listening = True
                self.listening.set()
                continue
            self.stats.messages.append(line)
            if self.on_message:
                self.on_message(line)
        self.listening.set()  # it ended: wake anyone waiting for it to listen

    def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        """Return once tcpdump says it is listening (so traffic sent after this is captured)."""
        assert self.proc is not None
        if not self.listening.wait(timeout):
            self.kill()
            raise CaptureError(f"tcpdump on {self.where} did not start within {timeout:.0f} s")
        if not self.heard_listening:
            self.finish()
            raise CaptureError(f"tcpdump on {self.where} failed: {self.error_text()}")

    @property
    def where(self) -> str:
        return f"{self.interface}" + (f" in {self.netns}" if self.netns else "")

    def error_text(self) -> str:
        lines = [m.removeprefix("tcpdump: ") for m in self.stats.messages if m.strip()]
        return "; ".join(lines[-2:]) or f"exit code {self.stats.returncode}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def interrupt(self) -> None:
        """Ask tcpdump to stop (SIGINT: it flushes the pcap and prints its counters)."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
        self.finish()

    def finish(self, timeout: float = STOP_TIMEOUT) -> CaptureStats:
        """Wait for tcpdump to end (escalating if it will not) and return its counters."""
        if self.proc is None:
            return self.stats
        try:
            self.stats.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.stats.returncode = self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.stats.returncode = self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.stats
