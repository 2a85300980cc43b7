"""vnetd: `vnetd [--state-dir DIR] [--metrics-port PORT [--metrics-address ADDR]] [--log-file FILE]
[--conflist FILE [--cni-conf-dir DIR]]`.

One per node, in the network namespace it serves. Listens on <state-dir>/vnetd.sock (root only),
reconciles stale endpoints at start, refreshes the address pools in the background, logs one JSON
line per request, and stops cleanly on SIGTERM/SIGINT (requests in flight finish). With
--conflist, it installs that conflist into --cni-conf-dir once it serves requests and the node's
pool is known, and leaves it in place when it stops (see deploy/conflist.py).

Memory: started as a program (`vnetd`, `python -m vnetcni.daemon.main`: the DaemonSet, vnetctl,
the tests, the bench), vnetd parses its arguments with typer, then re-executes itself (same pid,
same command line) with the parsed arguments in VNETD_SERVE_ARGS: the process that serves never
imports typer, rich, click or pydantic (~20 MiB of module objects a long-lived process would keep
for nothing). It also caps glibc's malloc arenas before its threads start (32 workers would
otherwise each get an arena of their own).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time

from ..node.layout import DEFAULT_STATE_DIR, NodeLayout


class _Handlers:
    """The warm handlers: one vnet plugin (shared dataplane, per-thread netlink sockets) and one
    vnet-ipam that leaves the pool refresh to the background thread."""

    def __init__(self, refresher, reaper=None) -> None:
        from ..ipam.config import IpamConfig
        from ..ipam.plugin import IpamPlugin
        from ..plugins.vnet import VnetPlugin

        self._ipam = IpamPlugin(refresh_on_add=False)
        self._vnet = VnetPlugin(ipam=self._ipam, teardown=reaper)  # DEL answers before the veth is gone
        self._refresher = refresher
        self._config = IpamConfig
        self.by_name = {"vnet": _Observed(self._vnet, self), "vnet-ipam": _Observed(self._ipam, self)}

    def observe(self, conf) -> None:
        ipam_type = (conf.ipam or {}).get("type") if conf.type == "vnet" else "vnet-ipam"
        if ipam_type != "vnet-ipam":
            return
        try:
            self._refresher.observe(self._config.from_netconf(conf))
        except Exception:
            pass  # the handler reports the bad configuration itself

    def __call__(self, name: str):
        return self.by_name.get(name)

    def close(self) -> None:
        self._vnet.close()


class _Observed:
    """A plugin whose ADDs also tell the refresher which pool to keep fresh."""

    def __init__(self, plugin, handlers: _Handlers) -> None:
        self._plugin = plugin
        self._handlers = handlers

    def add(self, inv, conf):
        self._handlers.observe(conf)
        return self._plugin.add(inv, conf)

    def __getattr__(self, name):
        return getattr(self._plugin, name)


def _logger(path: str | None):
    stream = open(path, "a", buffering=1) if path else sys.stderr
    lock = threading.Lock()

    def write(rec: dict) -> None:
        line = json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **rec}, separators=(",", ":"))
        with lock:
            stream.write(line + "\n")
            stream.flush()

    return write


INSTANCE_LOCK = "vnetd.lock"


def _instance_lock(state_dir: str) -> str:
    return os.path.join(NodeLayout(state_dir).state_dir, INSTANCE_LOCK)


def _single_instance(state_dir: str) -> int | None:
    """The descriptor holding vnetd's instance lock, or None when another vnetd holds it.
    Opened read-only (flock needs no write access): a vnetd holds nothing open for writing in
    the state directory, so it never keeps it from being remounted read-only."""
    import fcntl

    NodeLayout(state_dir).ensure()
    fd = os.open(_instance_lock(state_dir), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _reconcile(state_dir: str, log) -> None:
    from ..dataplane.linux import LinuxDataplane
    from ..plugins.reconcile import reconcile

    dataplane = LinuxDataplane(lock_dir=NodeLayout(state_dir).lock_dir)
    try:
        done = reconcile(state_dir, dataplane)
    except Exception as exc:  # noqa: BLE001 - a failed clean-up must not keep the node from serving
        log.warning("start-up reconciliation failed: %s", getattr(exc, "msg", exc))
        return
    finally:
        dataplane.close()
    for item in done.pruned:
        log.info("pruned stale endpoint %s (%s): %s", item.record.pod, ", ".join(item.record.ips), item.why)
    if done.unverified:
        log.warning("kept %d endpoint(s) that look gone but cannot be verified from here: %s",
                    len(done.unverified), "; ".join(f"{i.record.pod}: {i.why}" for i in done.unverified))


def _ipam_dirs(state_dir: str) -> list[str]:
    """vnet-ipam state directories the endpoint records name (besides vnetd's own)."""
    from ..plugins.endpoints import EndpointStore

    try:
        return sorted({r.ipam_state_dir for r in EndpointStore(state_dir).all().values() if r.ipam_state_dir})
    except Exception:  # noqa: BLE001 - unreadable records: the plugins report it
        return []


SERVE_ARGS_ENV = "VNETD_SERVE_ARGS"  # the argument stage's parsed arguments, for the serving stage
_reexec = False  # main(reexec=True) is running
MALLOC_ARENAS = 2  # glibc malloc arenas vnetd may use (Python code runs one thread at a time anyway)


def main(argv: list[str] | None = None, reexec: bool = False) -> int:
    """Run vnetd with these arguments; its exit code (2 for bad arguments, never a traceback).
    reexec (the program's entry point only): serve from a fresh image of this process, see
    serve_in_fresh_process."""
    global _reexec
    _reexec = reexec
    try:
        _app()(args=argv, prog_name="vnetd")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def serve_in_fresh_process(kwargs: dict) -> None:
    """Replace this process (same pid, same command line, same name in ps/pgrep) with one that
    serves with these arguments and has never imported the argument parser. Returns only if
    that is impossible (then the caller serves from this process)."""
    try:
        with open("/proc/self/comm") as f:
            name = f.read().strip()  # "vnetd" when started as the script; exec'ing Python renames it
    except OSError:
        name = ""
    env = dict(os.environ)
    env[SERVE_ARGS_ENV] = json.dumps({"args": kwargs, "name": name})
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return


def serve_staged(text: str) -> int:
    """The serving stage: the arguments the argument stage parsed (and checked), and the
    process name it had."""
    try:
        staged = json.loads(text)
        if not isinstance(staged, dict) or not isinstance(staged.get("args"), dict):
            raise ValueError("not an object with the arguments")
        kwargs, name = staged["args"], staged.get("name")
        unknown = sorted(set(kwargs) - set(SERVE_PARAMS))
        if unknown:
            raise ValueError(f"unknown argument(s) {', '.join(unknown)}")
    except ValueError as exc:
        print(f"error: {SERVE_ARGS_ENV} is not vnetd's parsed arguments ({exc}); unset it", file=sys.stderr)
        return 2
    if isinstance(name, str) and name:
        _set_process_name(name)
    return serve(**kwargs)


def _set_process_name(name: str) -> None:
    """The name ps, top and pgrep show (prctl PR_SET_NAME; the threads started later inherit it)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # 15: PR_SET_NAME
    except (OSError, AttributeError):
        pass


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (M_ARENA_MAX) for threads started from now on; without it every
    worker thread that allocates gets an arena of its own (~1-2 MiB resident each). An operator's
    MALLOC_ARENA_MAX wins. False where it cannot be applied (another libc)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(-8, arenas))  # -8: M_ARENA_MAX in glibc's malloc.h


def _mallopt():
    """glibc's mallopt(3), or None where the C library has none."""
    try:
        import ctypes

        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


# Each call reads and writes whole state files (~160 KB with 250 endpoints). glibc serves
# blocks that size with mmap and gives them back on free, or trims a worker arena's heap
# (madvise) once its free top passes the trim threshold: every call then faults the same pages
# in again (seen as page faults in memmove growing with the endpoints). Blocks up to 1 MiB come
# from the heap, and up to 4 MiB of free heap per arena is kept: at most 2 arenas, so a bounded
# 8 MiB of RSS buys calls whose cost does not grow with the node's pods.
MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 4 << 20


def keep_large_buffers(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) so the state
    files' buffers are reused rather than returned to the kernel on every call. An operator's
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ wins. False where it cannot be applied."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    mallopt = _mallopt()
    return (mallopt is not None and bool(mallopt(-3, mmap_threshold))  # M_MMAP_THRESHOLD
            and bool(mallopt(-1, trim_threshold)))  # M_TRIM_THRESHOLD


def _version(value: bool) -> None:
    import typer

    if value:
        from .. import __version__

        print(f"vnetd {__version__}")
        raise typer.Exit(0)


def _build_app():
    import typer

    from ..cli.help import plain_help, plain_usage_errors

    plain_help()
    plain_usage_errors()
    cmd = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})

    @cmd.command(help="vnet-cni's node agent: serves the vnet and vnet-ipam plugins' calls on "
                 "<state-dir>/vnetd.sock, refreshes the address pools in the background, prunes "
                 "endpoints whose pod is gone at start, and serves Prometheus metrics when asked.")
    def vnetd(
        state_dir: str = typer.Option(DEFAULT_STATE_DIR, "--state-dir",
                                      help="The node's state directory (socket, state files)."),
        metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535,
                                         help="Serve Prometheus metrics on this port (0: off)."),
        metrics_address: str = typer.Option("127.0.0.1", "--metrics-address",
                                            help="Address the metrics port listens on: 127.0.0.1 (default), "
                                            "or 0.0.0.0 / :: for a cluster Prometheus to scrape."),
        log_file: str = typer.Option("", "--log-file", help="Append request logs here (default: stderr)."),
        no_reconcile: bool = typer.Option(False, "--no-reconcile",
                                          help="Skip pruning stale endpoints at start."),
        conflist: str = typer.Option("", "--conflist", metavar="FILE",
                                     help="Install this conflist into --cni-conf-dir once vnetd serves requests "
                                     "and the node's pool is known (left in place on exit; `vnetctl uninstall` "
                                     "removes it)."),
        cni_conf_dir: str = typer.Option("/etc/cni/net.d", "--cni-conf-dir", help="Where --conflist goes."),
        conflist_name: str = typer.Option("10-vnet.conflist", "--conflist-name", help="Its file name there."),
        teardown_batch_ms: int = typer.Option(0, "--teardown-batch-ms", min=0, max=60000,
                                              help="A DEL is answered before its veth is gone; the reaper then "
                                              "waits this long for more DELs and removes their veths in one "
                                              "batch (their addresses stay held until then)."),
        _v: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                help="Print the version and exit."),
    ) -> None:
        kwargs = dict(state_dir=state_dir, metrics_port=metrics_port, metrics_address=metrics_address,
                      log_file=log_file or None, no_reconcile=no_reconcile, conflist=conflist or None,
                      cni_conf_dir=cni_conf_dir, conflist_name=conflist_name,
                      teardown_batch_seconds=teardown_batch_ms / 1000)
        if _reexec:
            serve_in_fresh_process(kwargs)  # returns only if it could not
        raise typer.Exit(serve(**kwargs))

    return cmd


_built = None


def _app():
    """The argument parser, built on first use (the serving stage never builds it)."""
    global _built
    if _built is None:
        _built = _build_app()
    return _built


def serve(state_dir: str, metrics_port: int = 0, metrics_address: str = "127.0.0.1",
          log_file: str | None = None, no_reconcile: bool = False, conflist: str | None = None,
          cni_conf_dir: str = "/etc/cni/net.d", conflist_name: str = "10-vnet.conflist",
          teardown_batch_seconds: float = 0.0) -> int:
    from .refresher import PoolRefresher
    from .server import DaemonRunning, Server

    limit_malloc_arenas()  # before any thread of vnetd's starts
    keep_large_buffers()
    logging.basicConfig(level=logging.INFO, format="vnetd %(levelname)s %(message)s", stream=sys.stderr)
    log = logging.getLogger("vnetd")

    # One vnetd per state directory, decided before anything is touched: a second one started
    # by mistake must not reconcile (or serve, or bind the metrics port) beside the first.
    # Held until the process ends.
    try:
        instance = _single_instance(state_dir)
    except Exception as exc:  # noqa: BLE001 - e.g. a read-only or unusable state directory
        print(f"error: cannot take the instance lock in {state_dir}: {getattr(exc, 'msg', exc)}", file=sys.stderr)
        return 1
    if instance is None:
        print(f"error: another vnetd is running for {state_dir} (it holds {_instance_lock(state_dir)})",
              file=sys.stderr)
        return 1

    refresher = PoolRefresher()
    installer = None
    if conflist:
        from ..deploy.conflist import ConflistError, ConflistInstaller

        try:
            installer = ConflistInstaller(conflist, cni_conf_dir, conflist_name, state_dir, refresher)
        except (ConflistError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    from .reaper import Reaper

    reaper = Reaper(state_dir, batch_seconds=teardown_batch_seconds)
    handlers = _Handlers(refresher, reaper)
    try:
        write_log = _logger(log_file)
    except OSError as exc:
        print(f"error: cannot open the log file {log_file}: {exc.strerror}", file=sys.stderr)
        return 1
    observers = [write_log]
    metrics = None
    if metrics_port:
        from .metrics import Metrics, MetricsError

        metrics = Metrics(refresher, [state_dir])
        try:
            metrics.serve(metrics_port, metrics_address)
        except MetricsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if "in use" in str(exc):
                print("hint: another process (another vnetd?) listens there; pick another --metrics-port",
                      file=sys.stderr)
            return 1
        observers.append(metrics.observe)

    def on_request(rec: dict) -> None:
        for fn in observers:
            fn(rec)

    # Reconcile before the socket exists: a plugin that finds vnetd listening finds the
    # node's state already pruned of endpoints whose pod is known to be gone.
    if not no_reconcile:
        _reconcile(state_dir, log)
    # Teardowns a previous vnetd answered but did not finish (it was killed): done before serving.
    try:
        finished = reaper.reap_all()
    except Exception as exc:  # noqa: BLE001 - the reaper's rounds try again
        log.warning("finishing pending teardowns failed: %s", getattr(exc, "msg", exc))
    else:
        if finished:
            log.info("finished %d teardown(s) a previous vnetd left pending", finished)
    learned = refresher.learn_from_state([state_dir, *_ipam_dirs(state_dir)])
    if learned:
        log.info("refreshing the pool(s) in %s", ", ".join(learned))
    server = Server(state_dir, handlers, on_request)
    server.teardowns = reaper
    from .afteranswer import AfterAnswer

    after_answer = server.after_answer = AfterAnswer()
    if metrics is not None and hasattr(server, "on_fallback"):
        server.on_fallback = metrics.fallback
    try:
        server.start()
    except DaemonRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot listen in {state_dir}: {exc}", file=sys.stderr)
        return 1
    reaper.start()
    after_answer.start()
    refresher.start()
    if installer is not None:
        installer.start()

    def stop(signum, _frame):
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on %s", server.socket_path)
    if metrics is not None:
        log.info("metrics on %s:%d/metrics", metrics_address, metrics_port)
    server.serve_forever()
    if installer is not None:
        installer.stop()  # the conflist stays: a restart or an upgrade must not flip the node NotReady
    server.stop()
    after_answer.stop()  # what a served ADD left until after its answer is done before exiting
    reaper.stop()  # finishes what is marked: a clean stop leaves no veth behind
    refresher.stop()
    handlers.close()
    if metrics is not None:
        metrics.close()
    log.info("stopped")
    os.close(instance)
    return 0


SERVE_PARAMS = serve.__code__.co_varnames[:serve.__code__.co_argcount]  # what VNETD_SERVE_ARGS may name


def run() -> None:
    staged = os.environ.pop(SERVE_ARGS_ENV, None)
    if staged is not None:
        sys.exit(serve_staged(staged))
    sys.exit(main(reexec=True))


if __name__ == "__main__":
    run()
