"""The front doors (compiled C, both builds, and the Python client) against vnetd stand-ins that
misbehave: closing early, never answering, not listening, refusing an oversized request; and the
descriptor of CNI_NETNS travelling with the request."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from vnetcni.daemon import protocol
from vnetcni.daemon.pending import attachment_key
from vnetcni.plugins.install import compile_front_door

SLACK = 3.0  # seconds on top of a deadline for process start-up on a loaded machine
NO_FALLBACK_MARK = "cannot execute /nonexistent"  # what the fallback build says if it fell back


@pytest.fixture(scope="module")
def doors(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("a C compiler is needed: scripts/setup.sh installs one")
    out = tmp_path_factory.mktemp("doors")
    built = {}
    for kind, fallback in (("fallback", "/nonexistent"), ("no-fallback", None)):
        built[kind] = out / kind
        built[kind].mkdir()
        compile_front_door("vnet", fallback, built[kind] / "vnet", cc)
    return {k: str(v / "vnet") for k, v in built.items()}


class StandIn:
    """A vnetd stand-in on <dir>/vnetd.sock: mode "close" (accept, close at once), "hang" (read,
    never answer until closed), "answer" (read the request and its descriptors, answer OK)."""

    def __init__(self, state_dir, mode: str) -> None:
        self.path = os.path.join(state_dir, "vnetd.sock")
        self.mode = mode
        self.requests: list[tuple[bytes, list[tuple[int, int]]]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.mode == "close":
                    continue
                data, seen = b"", []
                while True:
                    chunk, fds, _, _ = socket.recv_fds(conn, 65536, 4)
                    for fd in fds:
                        st = os.fstat(fd)
                        seen.append((st.st_dev, st.st_ino))
                        os.close(fd)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append((data, seen))
                if self.mode == "hang":
                    self.release.wait(30)
                    continue
                conn.sendall(protocol.encode_response(0, b'{"cniVersion": "1.0.0"}\n'))

    def close(self) -> None:
        self.release.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def stand_in(tmp_path):
    made = []

    def make(mode):
        s = StandIn(str(tmp_path), mode)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def conf(state_dir, **extra) -> dict:
    return {"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet", "stateDir": str(state_dir),
            "ipam": {"type": "vnet-ipam"}, **extra}


def run_door(door, command, config, netns="", container="ctr1", extra_env=None, timeout=30):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": netns,
                "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}, **(extra_env or {}))
    data = config if isinstance(config, bytes) else json.dumps(config).encode()
    started = time.monotonic()
    proc = subprocess.run([door], input=data, env=env, capture_output=True, timeout=timeout)
    took = time.monotonic() - started
    text = proc.stdout.decode()
    return proc.returncode, (json.loads(text) if text.strip() else None), took, proc.stderr.decode()


def run_python(command, config, netns="", container="ctr1"):
    """The Python front door (the in-process entry asks vnetd first)."""
    from vnetcni.plugins.front import handle

    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/nonexistent"}
    started = time.monotonic()
    out, code = handle("vnet", env, json.dumps(config).encode())
    return code, (json.loads(out) if out.strip() else None), time.monotonic() - started


@pytest.mark.parametrize("kind", ["fallback", "no-fallback"])
def test_vnetd_closing_early_is_a_cni_error_not_a_sigpipe(doors, stand_in, tmp_path, kind):
    s = stand_in("close")
    big = conf(tmp_path, pad="x" * 900_000)  # more than the socket buffers: the writes hit EPIPE
    code, out, _, _ = run_door(doors[kind], "ADD", big)
    assert code == 1, f"killed by signal {-code}" if code < 0 else out
    assert out["code"] == 11 and "vnetd" in out["msg"] and s.path in out["msg"], out


@pytest.mark.parametrize("kind", ["fallback", "no-fallback", "python"])
def test_a_vnetd_that_never_answers_gets_code_11_within_the_deadline(doors, stand_in, tmp_path, kind):
    s = stand_in("hang")
    c = conf(tmp_path, vnetdTimeoutSeconds=0.5)
    if kind == "python":
        code, out, took = run_python("ADD", c)
    else:
        code, out, took, _ = run_door(doors[kind], "ADD", c)
    assert code == 1 and out["code"] == 11, out
    assert "vnetd did not answer within" in out["msg"] and s.path in out["msg"], out
    assert took < 0.5 + SLACK
    req = protocol.decode_request(s.requests[0][0])
    assert req.timeout == 0.5  # vnetd learns the caller's deadline


@pytest.mark.parametrize("kind", ["fallback", "no-fallback", "python"])
def test_the_pod_netns_travels_as_a_descriptor(doors, stand_in, tmp_path, kind):
    s = stand_in("answer")
    c = conf(tmp_path)
    mine = os.stat("/proc/self/ns/net")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it must not block the front door (vnetd then refuses it)
    for netns in ("/proc/self/ns/net", str(tmp_path / "gone"), str(fifo)):
        if kind == "python":
            code, out, _ = run_python("ADD", c, netns=netns)
        else:
            code, out, _, _ = run_door(doors[kind], "ADD", c, netns=netns, timeout=10)
        assert code == 0, out
    (first, fds), (second, none), _ = s.requests
    assert protocol.decode_request(first).wants_fd and fds == [(mine.st_dev, mine.st_ino)]
    assert protocol.decode_request(second).netns_errno == 2 and none == []
    assert protocol.decode_request(first).timeout == 5.0  # NodeLayout's default


def test_without_vnetd_the_no_fallback_door_fails_fast_and_records_dels(doors, tmp_path):
    door = doors["no-fallback"]
    state = tmp_path / "state"
    state.mkdir()
    c = conf(state)
    sock = str(state / "vnetd.sock")
    for verb in ("ADD", "CHECK", "GC"):
        code, out, took, _ = run_door(door, verb, c, netns="/proc/self/ns/net")
        assert code == 1 and out["code"] == 11 and "vnetd is not listening" in out["msg"] and sock in out["msg"], out
        assert took < 5.0  # no waiting for a deadline when nothing listens
    code, out, _, _ = run_door(door, "STATUS", dict(c, cniVersion="1.1.0"))
    assert code == 1 and out["code"] == 50 and out["cniVersion"] == "1.1.0", out
    code, out, _, _ = run_door(door, "VERSION", c)
    assert code == 0 and "1.1.0" in out["supportedVersions"] and out["cniVersion"] == "1.0.0"
    # DEL: recorded for vnetd, answered with success so the pod's removal is never blocked
    code, out, _, err = run_door(door, "DEL", c, container="ctr-del")
    assert code == 0 and out is None, err
    pending = sorted(os.listdir(state / "pending-deletes"))
    assert pending == [attachment_key("vnet", "vntnet", "ctr-del", "eth0") + ".del"]
    req = protocol.decode_request((state / "pending-deletes" / pending[0]).read_bytes())
    assert req.env["CNI_COMMAND"] == "DEL" and req.env["CNI_CONTAINERID"] == "ctr-del" and json.loads(req.stdin) == c
    assert run_door(door, "DEL", c, container="ctr-del")[0] == 0  # again: the same file, rewritten
    assert sorted(os.listdir(state / "pending-deletes")) == pending
    # no state directory at all: nothing was ever allocated here, nothing to record
    code, _, _, _ = run_door(door, "DEL", conf(tmp_path / "never"), container="x")
    assert code == 0 and not (tmp_path / "never").exists()


def test_the_fallback_build_falls_back_when_nothing_listens(doors, tmp_path):
    code, out, _, _ = run_door(doors["fallback"], "ADD", conf(tmp_path), netns="/proc/self/ns/net")
    assert out["code"] == 50 and NO_FALLBACK_MARK in out["msg"]  # it tried to exec its Python entry


def test_no_fallback_door_reports_bad_configuration_itself(doors, tmp_path):
    door = doors["no-fallback"]
    code, out, _, _ = run_door(door, "ADD", conf(tmp_path, stateDir="relative"))
    assert code == 1 and out["code"] == 7 and "stateDir" in out["msg"]
    code, out, _, _ = run_door(door, "ADD", b"{not json")
    assert code == 1 and out["code"] == 6
    code, out, _, _ = run_door(door, "ADD", conf(tmp_path, pad="x" * (1 << 20)))
    assert code == 1 and out["code"] == 6 and "too large" in out["msg"]


@pytest.mark.skipif(os.geteuid() != 0, reason="vnetd serves root only")
@pytest.mark.parametrize("kind", ["fallback", "no-fallback", "python"])
def test_an_oversized_request_gets_an_explicit_answer(doors, tmp_path, kind):
    """CNI_* variables and configuration over vnetd's limit: a CNI error, not a silent close."""
    from vnetcni.daemon.server import Server

    server = Server(str(tmp_path), lambda name: None)
    server.start()
    try:
        c = conf(tmp_path, pad="x" * 1_000_000)
        args = "IgnoreUnknown=1;PAD=" + "y" * 120_000
        if kind == "python":
            from vnetcni.plugins.front import handle

            env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "", "CNI_IFNAME": "eth0",
                   "CNI_ARGS": args}
            out, code = handle("vnet", env, json.dumps(c).encode())
            out = json.loads(out)
        else:
            code, out, _, _ = run_door(doors[kind], "ADD", c, extra_env={"CNI_ARGS": args})
        assert code == 1 and out["code"] == 6 and "request to vnetd too large" in out["msg"], out
    finally:
        server.stop(drain_seconds=5)


def test_sigpipe_is_ignored_even_when_inherited_as_default(doors, stand_in, tmp_path):
    """A runtime may start plugins with SIGPIPE at its default action."""
    stand_in("close")
    proc = subprocess.run([doors["no-fallback"]], input=json.dumps(conf(tmp_path, pad="x" * 900_000)).encode(),
                          env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_NETNS": ""},
                          capture_output=True, timeout=30,
                          preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_DFL))
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 11


def test_vnetctl_install_no_fallback_puts_no_python_on_the_host(tmp_path):
    from typer.testing import CliRunner

    from vnetcni.cli.main import app

    res = CliRunner().invoke(app, ["install", "--cni-bin-dir", str(tmp_path / "bin"), "--create-dirs", "--no-fallback"])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path / "bin")) == ["vnet", "vnet-ipam"]  # no .vnet-cni entries
    for name in ("vnet", "vnet-ipam"):
        data = (tmp_path / "bin" / name).read_bytes()
        assert b"python" not in data.lower() and b".vnet-cni" not in data
        interp = subprocess.run(["readelf", "-l", str(tmp_path / "bin" / name)], capture_output=True, text=True)
        if interp.returncode == 0:
            assert "INTERP" not in interp.stdout, "linked statically: the host needs no loader"


def test_the_fallback_front_doors_are_linked_statically_too(tmp_path):
    """Every call of the runtime execs one: no loader, no relocations (the C library allows it
    here, as the no-fallback build above checks)."""
    from vnetcni.plugins.install import install

    installed = install(str(tmp_path / "bin"))
    assert installed.compiled
    for name in ("vnet", "vnet-ipam"):
        interp = subprocess.run(["readelf", "-l", str(tmp_path / "bin" / name)], capture_output=True, text=True)
        if interp.returncode == 0:
            assert "INTERP" not in interp.stdout
        version = subprocess.run([str(tmp_path / "bin" / name)], input=b'{"cniVersion": "1.0.0"}',
                                 env={"CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30)
        assert version.returncode == 0 and b"supportedVersions" in version.stdout
