"""A private containerd (the Debian 1.6 package) with its CRI plugin, as a kubelet's node runs it.

The node is two namespaces the test owns: a throwaway network namespace, and a mount namespace in
which directories of the test stand in for the host's /opt/cni/bin, /etc/cni/net.d and
/var/run/vnet (bind mounts over a private /opt, /etc/cni and a private tmpfs /run), so the paths a
DaemonSet and a conflist name (`stateDir: /var/run/vnet`) mean the same for containerd, the CNI
plugins it executes and the containers it runs, and nothing on the machine itself changes. A
holder process keeps the mount namespace alive; containerd, its shims and every node process the
tests start join it. containerd has its own config, root, state and socket. `stop()` always leaves
nothing: sandboxes removed through the CRI (containerd's own DELs), containerd stopped, any shim
and its container processes killed, the holder killed (the namespace's mounts go with it), every
mount left under its directories unmounted, the directories removed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from support import resources
from support.cri import CRIClient, CRIError

PAUSE_IMAGE = "localhost/vnt-pause:1"

CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
"""


class Containerd:
    """One containerd for a test module; `cri` is a connected CRIClient."""

    def __init__(self, node: str, host_root: Path, workdir: Path) -> None:
        self.node, self.host_root, self.workdir = node, host_root, workdir
        self.cni_bin, self.cni_conf = host_root / "opt/cni/bin", host_root / "etc/cni/net.d"
        # the socket path must stay short (sun_path), and outside /run (private to the node)
        self.base = Path(tempfile.mkdtemp(prefix=f"{resources.OWNER}cd", dir="/tmp"))
        self.root, self.state = workdir / "containerd-root", self.base / "state"
        self.socket = str(self.base / "containerd.sock")
        self.log_path = workdir / "containerd.log"
        self.proc: subprocess.Popen | None = None
        self.holder: subprocess.Popen | None = None
        self.cri: CRIClient | None = None

    # --- the node's namespaces -------------------------------------------------------
    NODE_MOUNTS = """set -e
mount -t tmpfs -o mode=0755 vnt-node-run /run
mkdir -p /run/vnet
mount --bind "$1/var/run/vnet" /run/vnet
mount --bind "$1/opt" /opt
mount --bind "$1/etc/cni" /etc/cni
echo ready
exec -a "$2" sleep infinity
"""

    def _hold_node_mounts(self) -> None:
        for d in (self.cni_bin, self.cni_conf, self.host_root / "var/run/vnet"):
            d.mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                                        self.NODE_MOUNTS, "node-mounts", str(self.host_root),
                                        f"{resources.OWNER}-node-holder"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            self.holder.wait(10)
            raise RuntimeError(f"cannot make the node's mount namespace: {self.holder.stderr.read().decode()}")

    def enter(self) -> list[str]:
        """The command prefix that runs a process on the node (its network and mount namespaces)."""
        return ["nsenter", f"--net=/run/netns/{self.node}", f"--mount=/proc/{self.holder.pid}/ns/mnt"]

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 30) -> "Containerd":
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self._hold_node_mounts()
        config = self.base / "containerd.toml"  # its command line names this session
        config.write_text(CONFIG.format(root=self.root, state=self.state, socket=self.socket, pause=PAUSE_IMAGE,
                                        runc=shutil.which("runc") or "/usr/sbin/runc"))
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.enter(), "containerd", "--config", str(config)],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.cri = CRIClient(self.socket)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.path.exists(self.socket):
                    self.cri.version()
                    break
            except CRIError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {self.log_tail()}")
            time.sleep(0.1)
        return self

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ctr", "--address", self.socket, "-n", "k8s.io", *args], capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive), timeout=300)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Everything goes, whatever state things are in."""
        if self.cri is not None:
            try:
                for sandbox in self.cri.sandboxes():
                    for call in (self.cri.stop_sandbox, self.cri.remove_sandbox):
                        try:
                            call(sandbox.id)
                        except CRIError:
                            pass
            except CRIError:
                pass
            self.cri.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._kill_shims()
        if self.holder is not None:
            if self.holder.poll() is None:
                self.holder.kill()
            self.holder.wait(10)
            self.holder.stdout.close()
            self.holder.stderr.close()
        self._unmount_all()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_shims(self) -> None:
        """Shims of this containerd (they name its socket) and every process under them."""
        _kill_trees(lambda argv: argv[0].endswith(b"containerd-shim-runc-v2") and self.socket.encode() in argv)

    def _unmount_all(self) -> None:
        prefixes = (str(self.root) + "/", str(self.base) + "/")
        for _ in range(3):
            mounts = []
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    target = line.split()[4].replace("\\040", " ")
                    if target.startswith(prefixes):
                        mounts.append(target)
            if not mounts:
                return
            for target in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", target], capture_output=True)


def _kill_trees(match) -> None:
    """SIGKILL every process whose argv matches, and everything under it (containers first)."""
    table = resources.process_table()
    roots = set()
    for pid in table:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] and pid != os.getpid() and match(argv):
            roots.add(pid)
    doomed, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, (_, _, ppid) in table.items() if ppid in frontier and pid not in doomed}
        doomed |= frontier
    for pid in sorted(doomed - roots) + sorted(roots):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_SESSION_OBJECT = re.compile(rb"/tmp/(vnt(\d+)cd[^/\0]*)|^(vnt(\d+))-node-holder$")


def sweep_dead_sessions() -> None:
    """What a test session killed outright (SIGKILL, a lost machine) left of its nodes: its
    containerd, shims, containers and the node holder (their command lines name the session's
    /tmp/vnt<pid>cd… directory or vnt<pid>-node-holder), and that directory. Sessions still alive
    are never touched."""
    def dead(owner: bytes) -> bool:
        return int(owner) != os.getpid() and not os.path.exists(f"/proc/{int(owner)}")

    def match(argv: list[bytes]) -> bool:
        for arg in argv:
            m = _SESSION_OBJECT.search(arg)
            if m and dead(m.group(2) or m.group(4)):
                return True
        return False

    _kill_trees(match)
    for entry in os.listdir("/tmp"):
        m = re.fullmatch(r"vnt(\d+)cd\w*", entry)
        if m and dead(m.group(1).encode()):
            shutil.rmtree(os.path.join("/tmp", entry), ignore_errors=True)
