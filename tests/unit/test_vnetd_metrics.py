"""vnetd's command line and its Prometheus exposition (issue 13 #5, #6): readable errors for bad
metrics flags, conventional names, parsed by prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vnetcni.daemon.metrics import Metrics, MetricsError
from vnetcni.daemon.refresher import PoolRefresher
from vnetcni.ipam.store import IpamStore

VNETD = str(Path(sys.executable).with_name("vnetd"))


def _vnetd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([VNETD, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--metrics-port", "70000"], "65535"),
    (["--metrics-port", "x"], "--metrics-port"),
    (["--bogus"], "No such option"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    out = _vnetd(*args)
    assert out.returncode == 2 and message in out.stderr and out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr + out.stdout


def test_metrics_port_taken_is_a_readable_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _vnetd("--state-dir", str(tmp_path), "--metrics-port", str(port), "--no-reconcile")
    assert out.returncode == 1, out.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr and "in use" in out.stderr
    assert "Traceback" not in out.stderr
    bad = _vnetd("--state-dir", str(tmp_path), "--metrics-port", "19999", "--metrics-address", "example")
    assert bad.returncode == 1 and "must be an IP address" in bad.stderr and "Traceback" not in bad.stderr


def test_version():
    out = _vnetd("--version")
    assert out.returncode == 0 and out.stdout.startswith("vnetd ")


def _families(metrics: Metrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_follows_prometheus_conventions(tmp_path):
    metrics = Metrics(PoolRefresher(), [str(tmp_path)])
    metrics.observe({"plugin": "vnet", "verb": "ADD", "result": "ok", "duration_ms": 4.2})
    metrics.observe({"plugin": "vnet", "verb": "ADD", "result": "error", "code": 7, "duration_ms": 1.0})
    metrics.observe({"plugin": "vnet", "verb": "DEL", "result": "error", "code": 11, "duration_ms": 900,
                     "deadline_missed": "lock_timeout"})
    metrics.fallback("other network namespace")
    fams = _families(metrics)
    # counters: the family is named without _total, every sample ends in _total
    for name in ("vnetd_cni_requests", "vnetd_fallbacks", "vnetd_deadline_misses",
                 "vnetd_metadata_refresh_failures"):
        assert fams[name].type == "counter", name
        assert all(s.name == name + "_total" for s in fams[name].samples), name
    req = {(s.labels["verb"], s.labels["result"], s.labels["code"]): s.value
           for s in fams["vnetd_cni_requests"].samples}
    assert req == {("ADD", "ok", "0"): 1, ("ADD", "error", "7"): 1, ("DEL", "error", "11"): 1}
    hist = fams["vnetd_cni_request_duration_seconds"]
    assert hist.type == "histogram"
    counts = {(s.labels["verb"], s.labels["code"]): s.value for s in hist.samples if s.name.endswith("_count")}
    assert counts == {("ADD", "0"): 1, ("ADD", "7"): 1, ("DEL", "11"): 1}
    sums = [s.value for s in hist.samples if s.name.endswith("_sum") and s.labels["verb"] == "DEL"]
    assert sums == [pytest.approx(0.9)]  # seconds, not milliseconds
    assert fams["vnetd_deadline_misses"].samples[0].labels == {"verb": "DEL", "kind": "lock_timeout"}
    assert fams["vnetd_fallbacks"].samples[0].value == 1
    assert any(name.startswith("process_") for name in fams)  # process_cpu_seconds, process_resident_memory_bytes
    assert "process_resident_memory_bytes" in fams
    failures = fams["vnetd_metadata_refresh_failures"].samples
    assert [(s.labels, s.value) for s in failures] == [({"state_dir": str(tmp_path)}, 0)]
    assert not [n for n in fams if n.startswith("vnetd_") and not
                (n.endswith(("_seconds", "_addresses", "_in_use", "_requests")) or fams[n].type == "counter")], \
        "every vnetd series carries its unit or is a counter"


def test_pool_gauges_come_from_the_state_at_start(tmp_path):
    """After a restart vnetd shows the pool it holds before any ADD (the refresher tracks nothing)."""
    from vnetcni.ipam.metadata import render_node

    md = tmp_path / "interfaces.xml"
    md.write_bytes(render_node("00:0d:3a:00:00:01", "10.240.0.0/16", "10.240.0.4",
                               ["10.240.0.5", "10.240.0.6", "10.240.0.7"]))
    conf = {"cniVersion": "1.0.0", "name": "vnet", "type": "vnet-ipam",
            "ipam": {"type": "vnet-ipam", "stateDir": str(tmp_path), "metadataFile": str(md)}}
    _add(conf)
    metrics = Metrics(PoolRefresher(), [str(tmp_path)])
    fams = _families(metrics)
    label = {"state_dir": str(tmp_path)}
    assert [(s.labels, s.value) for s in fams["vnetd_pool_addresses"].samples] == [(label, 3)]
    assert [(s.labels, s.value) for s in fams["vnetd_pool_addresses_in_use"].samples] == [(label, 1)]
    assert fams["vnetd_metadata_refresh_age_seconds"].samples[0].value >= 0
    assert IpamStore(str(tmp_path)).read().pool is not None
    assert [(s.labels, s.value) for s in fams["vnetd_pending_delete_requests"].samples] == [(label, 0)]
    # the ADD above ran in-process (no vnetd): counted, as a counter, once vnetd exposes the node
    calls = fams["vnet_in_process_calls"]
    assert calls.type == "counter" and [(s.name, s.labels, s.value) for s in calls.samples] == \
        [("vnet_in_process_calls_total", label, 1)]
    _add(conf)  # the same ADD again (answered from the allocation): one more call without vnetd
    assert [s.value for s in _families(metrics)["vnet_in_process_calls"].samples] == [2]


def _add(conf: dict) -> None:
    """One vnet-ipam ADD in-process, as a runtime makes it."""
    import os

    env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID="c0ffee", CNI_NETNS="/run/netns/x",
               CNI_IFNAME="eth0", CNI_PATH="/nonexistent")
    out = subprocess.run([sys.executable, "-m", "vnetcni.plugins.ipam_main"], input=json.dumps(conf).encode(),
                         env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_serve_refuses_a_bad_port():
    with pytest.raises(MetricsError):
        Metrics(PoolRefresher()).serve(70000)
