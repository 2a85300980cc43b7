"""vnetd's Prometheus metrics, served on a loopback port when asked (off by default)."""

from __future__ import annotations

import time


class Metrics:
    def __init__(self, refresher) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("vnetd_requests", "CNI requests served", ["plugin", "verb", "result"],
                                registry=self.registry)
        self.latency = Histogram("vnetd_request_seconds", "CNI request latency", ["verb", "result"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10),
                                 registry=self.registry)
        self.registry.register(_PoolCollector(refresher))

    def observe(self, rec: dict) -> None:
        self.requests.labels(rec["plugin"], rec["verb"], rec["result"]).inc()
        self.latency.labels(rec["verb"], rec["result"]).observe(rec["duration_ms"] / 1000)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("metrics are served on loopback only")
        start_http_server(port, addr=host, registry=self.registry)


class _PoolCollector:
    """Pool metrics read from the state at scrape time, one series per pool vnetd refreshes."""

    def __init__(self, refresher) -> None:
        self._refresher = refresher

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from ..ipam.allocator import usage
        from ..ipam.store import IpamStore

        size = GaugeMetricFamily("vnetd_pool_addresses", "Secondary addresses in the node's pool", labels=["state_dir"])
        in_use = GaugeMetricFamily("vnetd_pool_in_use", "Addresses allocated to pods", labels=["state_dir"])
        age = GaugeMetricFamily("vnetd_metadata_refresh_age_seconds", "Seconds since the pool was last learned",
                                labels=["state_dir"])
        failures = GaugeMetricFamily("vnetd_metadata_refresh_failures", "Failed metadata refreshes since start",
                                     labels=["state_dir"])
        for t in self._refresher.tracked():
            sd = t.cfg.state_dir
            failures.add_metric([sd], t.total_failures)
            try:
                state = IpamStore(sd).read()
            except Exception:
                continue  # a corrupt state is reported by the plugins themselves
            held, listed = usage(state)
            size.add_metric([sd], listed)
            in_use.add_metric([sd], held)
            if state.fetched_at is not None:
                age.add_metric([sd], max(0.0, time.time() - state.fetched_at))
        yield from (size, in_use, age, failures)
