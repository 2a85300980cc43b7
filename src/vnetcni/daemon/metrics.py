"""vnetd's Prometheus metrics, served on a loopback port when asked (off by default)."""

from __future__ import annotations

import time


class Metrics:
    def __init__(self, refresher, state_dir: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("vnetd_requests", "CNI requests served", ["plugin", "verb", "result"],
                                registry=self.registry)
        self.latency = Histogram("vnetd_request_seconds", "CNI request latency", ["verb", "result"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10),
                                 registry=self.registry)
        self._refresher = refresher
        pool_size = Gauge("vnetd_pool_addresses", "Secondary addresses in the node's pool", ["state_dir"],
                          registry=self.registry)
        in_use = Gauge("vnetd_pool_in_use", "Addresses allocated to pods", ["state_dir"], registry=self.registry)
        age = Gauge("vnetd_metadata_refresh_age_seconds", "Seconds since the pool was last learned",
                    ["state_dir"], registry=self.registry)
        failures = Gauge("vnetd_metadata_refresh_failures", "Failed metadata refreshes since start",
                         ["state_dir"], registry=self.registry)
        self._gauges = (pool_size, in_use, age, failures)
        self._state_dir = state_dir

    def observe(self, rec: dict) -> None:
        self.requests.labels(rec["plugin"], rec["verb"], rec["result"]).inc()
        self.latency.labels(rec["verb"], rec["result"]).observe(rec["duration_ms"] / 1000)

    def _update_pools(self) -> None:
        from ..ipam.allocator import usage
        from ..ipam.store import IpamStore

        pool_size, in_use, age, failures = self._gauges
        for t in self._refresher.tracked():
            sd = t.cfg.state_dir
            try:
                state = IpamStore(sd).read()
            except Exception:
                continue  # a corrupt state is reported by the plugins themselves
            held, listed = usage(state)
            pool_size.labels(sd).set(listed)
            in_use.labels(sd).set(held)
            if state.fetched_at is not None:
                age.labels(sd).set(max(0.0, time.time() - state.fetched_at))
            failures.labels(sd).set(t.total_failures)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("metrics are served on loopback only")
        metrics = self

        class _Refreshing:
            def collect(self):
                metrics._update_pools()
                return []

        self.registry.register(_Refreshing())
        start_http_server(port, addr=host, registry=self.registry)
