"""vnetd's Prometheus metrics (off unless `--metrics-port`; docs/metrics.md lists every series).

Names follow Prometheus' conventions: counters end in `_total`, durations are `_seconds`, one
unit per name, labels for the dimensions (verb, result, CNI error code).
"""

from __future__ import annotations

import os
import time

DEFAULT_ADDRESS = "127.0.0.1"
DURATION_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)


class MetricsError(Exception):
    """The metrics endpoint cannot be served (address in use, bad address)."""


def _code(rec: dict) -> str:
    """The CNI error code of a request as a label value ("0" for success, "" when unknown)."""
    if rec.get("result") == "ok":
        return "0"
    code = rec.get("code")
    return str(code) if isinstance(code, int) else "unknown"


class Metrics:
    def __init__(self, refresher, state_dirs: list[str] | tuple[str, ...] = ()) -> None:
        from prometheus_client import (CollectorRegistry, Counter, Histogram, PlatformCollector,
                                       ProcessCollector, disable_created_metrics)

        disable_created_metrics()  # no *_created series: scrapers rarely use them, they double the output
        self.registry = CollectorRegistry()
        self.requests = Counter("vnetd_cni_requests", "CNI requests served by vnetd",
                                ["plugin", "verb", "result", "code"], registry=self.registry)
        self.duration = Histogram("vnetd_cni_request_duration_seconds",
                                  "Time vnetd took to serve a CNI request", ["verb", "result", "code"],
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        self.fallbacks = Counter("vnetd_fallbacks",
                                 "Requests vnetd handed back to the caller to run in-process", ["reason"],
                                 registry=self.registry)
        self.deadline_misses = Counter("vnetd_deadline_misses",
                                       "Requests that failed by their caller's deadline (kind: expired, "
                                       "lock_timeout, rolled_back, unanswered)",
                                       ["verb", "kind"], registry=self.registry)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_PoolCollector(refresher, state_dirs))
        self._server = None

    def observe(self, rec: dict) -> None:
        """One served request (the record vnetd logs)."""
        verb, result, code = rec.get("verb", ""), rec.get("result", ""), _code(rec)
        self.requests.labels(rec.get("plugin", ""), verb, result, code).inc()
        self.duration.labels(verb, result, code).observe(rec.get("duration_ms", 0.0) / 1000)
        missed = rec.get("deadline_missed")
        if missed:
            self.deadline_misses.labels(verb, missed if isinstance(missed, str) else "expired").inc()

    def fallback(self, reason: str) -> None:
        """vnetd answered "run it yourself" (another namespace, unknown plugin, bad request)."""
        self.fallbacks.labels(reason).inc()

    def serve(self, port: int, address: str = DEFAULT_ADDRESS) -> None:
        """Serve /metrics on address:port (in a thread); MetricsError when that is impossible."""
        import ipaddress

        from prometheus_client import start_http_server

        if not 1 <= port <= 65535:
            raise MetricsError(f"--metrics-port must be 1-65535, got {port}")
        host = address.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise MetricsError(f"--metrics-address must be an IP address (0.0.0.0, 127.0.0.1, ::), "
                               f"got {address!r}") from None
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise MetricsError(f"cannot serve metrics on {shown}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _PoolCollector:
    """Pool metrics read from the state at scrape time: vnetd's own state directory from the start
    (no ADD needed), plus every pool the refresher keeps fresh."""

    def __init__(self, refresher, state_dirs) -> None:
        self._refresher = refresher
        self._state_dirs = list(state_dirs)

    def describe(self):
        return []  # series appear per pool; nothing to check at registration

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from ..ipam.allocator import usage
        from ..ipam.store import IpamStore
        from ..node.layout import NodeLayout
        from .pending import count as pending_count

        size = GaugeMetricFamily("vnetd_pool_addresses", "Secondary addresses in the node's pool",
                                 labels=["state_dir"])
        in_use = GaugeMetricFamily("vnetd_pool_addresses_in_use", "Pool addresses allocated to pods",
                                   labels=["state_dir"])
        age = GaugeMetricFamily("vnetd_metadata_refresh_age_seconds",
                                "Seconds since the pool was last learned from the metadata service",
                                labels=["state_dir"])
        failures = CounterMetricFamily("vnetd_metadata_refresh_failures",
                                       "Failed metadata refreshes since vnetd started", labels=["state_dir"])
        pending = GaugeMetricFamily("vnetd_pending_delete_requests",
                                    "DELs a no-fallback front door recorded while vnetd was unreachable, "
                                    "not carried out yet", labels=["state_dir"])
        in_process = CounterMetricFamily("vnet_in_process_calls",
                                         "Calls a fallback front door ran in-process (vnetd unreachable, "
                                         "or handed back by vnetd: see vnetd_fallbacks_total)",
                                         labels=["state_dir"])
        failed_by_dir = {}
        for t in self._refresher.tracked():
            failed_by_dir[t.cfg.state_dir] = failed_by_dir.get(t.cfg.state_dir, 0) + t.total_failures
        for sd in self._state_dirs:
            failed_by_dir.setdefault(sd, 0)
        for sd in sorted(failed_by_dir):
            failures.add_metric([sd], failed_by_dir[sd])
            try:
                pending.add_metric([sd], pending_count(NodeLayout(sd)))
            except (OSError, ValueError):
                pass
            try:
                in_process.add_metric([sd], os.stat(NodeLayout(sd).in_process_log).st_size)
            except FileNotFoundError:
                in_process.add_metric([sd], 0)
            except OSError:
                pass
            try:
                state = IpamStore(sd).read()
            except Exception:
                continue  # no pool there yet, or a corrupt state the plugins report themselves
            if state.pool is None:
                continue
            held, listed = usage(state)
            size.add_metric([sd], listed)
            in_use.add_metric([sd], held)
            if state.fetched_at is not None:
                age.add_metric([sd], max(0.0, time.time() - state.fetched_at))
        yield from (size, in_use, age, failures, pending, in_process)
