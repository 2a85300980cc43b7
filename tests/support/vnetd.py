"""A real vnetd in a test's node namespace: start, SIGSTOP/SIGCONT, SIGKILL, SIGTERM, its log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from support.cni import wait_for
from support.statefiles import endpoint_records
from vnetcni.daemon.client import listening

VNETD = str(Path(sys.executable).with_name("vnetd"))


def tearing_down(state_dir: str) -> list[str]:
    """The attachments whose DEL vnetd answered before their veth was gone (its reaper's work)."""
    records = endpoint_records(state_dir)
    return [key for key, rec in records.items() if rec.get("tearingDown")]


def wait_for_teardowns(state_dir: str, timeout: float = 30) -> None:
    """Until vnetd's reaper has removed every answered DEL's veth, address and record."""
    wait_for(lambda: not tearing_down(state_dir), timeout=timeout, what="vnetd's reaper to finish the teardowns")


class Daemon:
    """vnetd run with `ip netns exec NODE vnetd ...` (exec'd: the process is vnetd itself)."""

    def __init__(self, node: str, state_dir: str, log: str) -> None:
        self.node, self.state_dir, self.log = node, state_dir, log
        self.proc: subprocess.Popen | None = None
        self._stderr = None

    @property
    def sock(self) -> str:
        return os.path.join(self.state_dir, "vnetd.sock")

    def start(self, *extra: str) -> "Daemon":
        self._close_stderr()
        self._stderr = open(self.log + ".stderr", "ab")  # a file: a chatty vnetd never blocks on a pipe
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.node, VNETD, "--state-dir", self.state_dir,
                                      "--log-file", self.log, *extra], stderr=self._stderr)
        wait_for(lambda: listening(self.sock) or self.proc.poll() is not None, what="vnetd socket")
        assert self.proc.poll() is None, self.stderr()
        return self

    def stderr(self) -> str:
        try:
            return Path(self.log + ".stderr").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)
        self._close_stderr()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.resume()  # a stopped vnetd handles SIGTERM once it runs again
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_stderr()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def served(self) -> list[dict]:
        if not os.path.exists(self.log):
            return []
        return [json.loads(line) for line in open(self.log) if line.strip()]
