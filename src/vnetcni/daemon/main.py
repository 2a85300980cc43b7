"""vnetd: `vnetd [--state-dir DIR] [--metrics-port PORT] [--log-file FILE]`.

One per node, in the network namespace it serves. Listens on <state-dir>/vnetd.sock (root only),
reconciles stale endpoints at start, refreshes the address pools in the background, logs one JSON
line per request, and stops cleanly on SIGTERM/SIGINT (requests in flight finish).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

from ..node.layout import DEFAULT_STATE_DIR, NodeLayout


class _Handlers:
    """The warm handlers: one vnet plugin (shared dataplane, per-thread netlink sockets) and one
    vnet-ipam that leaves the pool refresh to the background thread."""

    def __init__(self, refresher) -> None:
        from ..ipam.config import IpamConfig
        from ..ipam.plugin import IpamPlugin
        from ..plugins.vnet import VnetPlugin

        self._ipam = IpamPlugin(refresh_on_add=False)
        self._vnet = VnetPlugin(ipam=self._ipam)
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


def main(argv: list[str] | None = None) -> int:
    from .refresher import PoolRefresher
    from .server import DaemonRunning, Server

    ap = argparse.ArgumentParser(prog="vnetd", description="vnet-cni node agent")
    ap.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="state directory (socket, state files)")
    ap.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on 127.0.0.1:PORT")
    ap.add_argument("--log-file", default=None, help="append request logs here (default: stderr)")
    ap.add_argument("--no-reconcile", action="store_true", help="skip pruning stale endpoints at start")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="vnetd %(levelname)s %(message)s", stream=sys.stderr)
    log = logging.getLogger("vnetd")

    refresher = PoolRefresher()
    handlers = _Handlers(refresher)
    write_log = _logger(args.log_file)
    observers = [write_log]
    if args.metrics_port:
        from .metrics import Metrics

        metrics = Metrics(refresher)
        metrics.serve(args.metrics_port)
        observers.append(metrics.observe)

    def on_request(rec: dict) -> None:
        for fn in observers:
            fn(rec)

    # Reconcile before the socket exists: a plugin that finds vnetd listening finds the
    # node's state already pruned of endpoints whose namespace is gone.
    if not args.no_reconcile:
        from ..dataplane.linux import LinuxDataplane
        from ..plugins.reconcile import reconcile

        try:
            done = reconcile(args.state_dir, LinuxDataplane(lock_dir=NodeLayout(args.state_dir).lock_dir))
            if done.pruned:
                log.info("pruned %d stale endpoint(s) at start: %s", len(done.pruned),
                         ", ".join(r["containerId"][:12] for r in done.pruned))
        except Exception as exc:
            log.warning("start-up reconciliation failed: %s", exc)
    server = Server(args.state_dir, handlers, on_request)
    try:
        server.start()
    except DaemonRunning as exc:
        print(f"vnetd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"vnetd: cannot listen in {args.state_dir}: {exc}", file=sys.stderr)
        return 1
    refresher.start()

    def stop(signum, _frame):
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on %s", server.socket_path)
    server.serve_forever()
    server.stop()
    refresher.stop()
    handlers.close()
    log.info("stopped")
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
