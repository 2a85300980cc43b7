"""The fault matrix's invariants, checked against the kernel and the state files after a burst.

A cell of the matrix runs a burst of CNI calls under some fault, lets everything settle, then asks
`check_node(...)` and `check_calls(...)`:

- no address on two pods: every pod namespace's addresses are read from the kernel
  (`ip -j addr`), loopback aside;
- no leak: every allocation in `ipam.json` has an endpoint record, and every record an
  allocation of the same address, a host veth on the node and (while its pod namespace exists)
  that address in the pod; every `azv…` veth on the node has a record; every address a pod holds
  in the kernel is allocated to that pod's attachment;
- every call was answered within its deadline, with success (a result naming an address) or a
  well-formed CNI error object (`cniVersion`, integer `code`, string `msg`).

Use it from any cell (vnetd or in-process, races, metadata or state-directory faults):

    calls = CallLog("add-add race")
    calls.record(outcome, elapsed, deadline=10, what="ADD ctr3")
    check_calls(calls)
    problems = node_problems(node="vnt123node1", state_dirs=[sd], pods={"ctr3": "vnt123pod4"})
    assert not problems, problems

`CallLog.report()` gives the slowest call for the matrix table; `write_report` collects the cells of
one session in a JSON file (and prints them with `pytest -s`).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import defaultdict
from dataclasses import dataclass, field

# The state files, read raw (no side effects, independent of the code under test).
from support.statefiles import allocations, endpoint_records  # noqa: E402,F401

VETH_PREFIX = "azv"


# --- the kernel's view --------------------------------------------------------------------------
def _ip_json(*args: str) -> list[dict]:
    proc = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip -j {' '.join(args)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout or "[]")


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def pod_addresses(ns: str) -> set[str]:
    """The addresses configured in a pod namespace (CIDR strings), loopback and link-local aside."""
    if not netns_exists(ns):
        return set()
    out = set()
    for link in _ip_json("-n", ns, "addr", "show"):
        if link.get("ifname") == "lo":
            continue
        for a in link.get("addr_info", []):
            if a.get("scope") == "link":
                continue
            out.add(f"{a['local']}/{a['prefixlen']}")
    return out


def node_veths(node: str | None) -> set[str]:
    """Host-side pod veths (`azv…`) in the node namespace (None: the current namespace)."""
    links = _ip_json(*(("-n", node) if node else ()), "link", "show")
    return {link["ifname"] for link in links if link.get("ifname", "").startswith(VETH_PREFIX)}


def _ip(cidr: str) -> str:
    return cidr.split("/")[0]


# --- the invariants -----------------------------------------------------------------------------
def duplicate_addresses(pods: dict[str, str]) -> dict[str, list[str]]:
    """address -> the pods (container IDs) that hold it in the kernel, for every address held twice.
    `pods`: container ID -> pod netns name."""
    holders: dict[str, list[str]] = defaultdict(list)
    for cid, ns in pods.items():
        for cidr in pod_addresses(ns):
            holders[_ip(cidr)].append(cid)
    return {ip: sorted(c) for ip, c in holders.items() if len(c) > 1}


def node_problems(*, node: str | None, state_dirs: list[str], pods: dict[str, str],
                  ipam_dirs: list[str] | None = None) -> list[str]:
    """Everything wrong on one node after a burst has settled (empty: all invariants hold).

    node: the node's netns name (None: this namespace); state_dirs: vnet state directories
    (endpoint records); ipam_dirs: vnet-ipam state directories (default: the same ones);
    pods: container ID -> pod netns name, for every pod the cell ever made (live or deleted).
    """
    problems: list[str] = []
    for ip, cids in duplicate_addresses(pods).items():
        problems.append(f"address {ip} is configured on {len(cids)} pods: {', '.join(cids)}")

    records: dict[str, dict] = {}
    for sd in state_dirs:
        records.update(endpoint_records(sd))
    allocs: dict[str, dict] = {}
    for sd in ipam_dirs if ipam_dirs is not None else state_dirs:
        for key, a in allocations(sd).items():
            if key in allocs:
                problems.append(f"allocation {key} is held in two IPAM state directories")
            allocs[key] = a

    by_address: dict[str, list[str]] = defaultdict(list)
    for key, a in allocs.items():
        by_address[_ip(a.get("address", ""))].append(key)
    for ip, keys in by_address.items():
        if len(keys) > 1:
            problems.append(f"address {ip} is allocated to {len(keys)} attachments: {', '.join(sorted(keys))}")

    veths = node_veths(node)
    recorded_veths = set()
    for key, rec in records.items():
        recorded_veths.add(rec.get("hostIfName"))
        alloc = allocs.get(key)
        ips = {_ip(c) for c in rec.get("ips", [])}
        # A DEL vnetd answered before the teardown: its reaper deletes the veth, then releases the
        # address, then drops the record, so a marked record may be caught between two of those
        # steps (also when vnetd was killed there: the next one finishes it). Only what was not
        # yet undone must still hold; that it is all undone in the end is checked after
        # wait_for_teardowns (and by the cells that finish).
        pending = bool(rec.get("tearingDown"))
        if alloc is None:
            if not pending:
                problems.append(f"record {key} ({', '.join(sorted(ips))}) has no allocation: leaked record "
                                "or an address the allocator may hand out again")
        elif _ip(alloc.get("address", "")) not in ips:
            problems.append(f"record {key} says {sorted(ips)} but the allocation is {alloc.get('address')}")
        if rec.get("hostIfName") not in veths:
            if pending:
                continue  # its pod end (and the address on it) went with it
            problems.append(f"record {key} names veth {rec.get('hostIfName')}, which does not exist")
        ns = pods.get(rec.get("containerId", ""))
        if ns and netns_exists(ns):
            held = {_ip(c) for c in pod_addresses(ns)}
            if not ips <= held:
                problems.append(f"record {key}: pod {ns} lacks {sorted(ips - held)} in the kernel")
    for key, a in allocs.items():
        if key not in records:
            problems.append(f"allocation {a.get('address')} for {key} has no endpoint record: leaked allocation")
    for v in sorted(veths - recorded_veths):
        problems.append(f"veth {v} on the node has no endpoint record: leaked veth")

    alloc_by_container: dict[str, set[str]] = defaultdict(set)
    for a in allocs.values():
        alloc_by_container[a.get("containerId", "")].add(_ip(a.get("address", "")))
    for cid, ns in pods.items():
        held = {_ip(c) for c in pod_addresses(ns)}
        stray = held - alloc_by_container.get(cid, set())
        if stray:
            problems.append(f"pod {cid} ({ns}) holds {sorted(stray)} in the kernel with no allocation "
                            "for it: the allocator may hand it to another pod")
    return problems


# --- the calls ----------------------------------------------------------------------------------
@dataclass
class Call:
    what: str
    code: int
    out: dict | None
    elapsed: float
    deadline: float
    note: str = ""


@dataclass
class CallLog:
    """Every call a cell made (thread-safe), for check_calls and the matrix's slowest call."""

    cell: str
    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, code: int, out: dict | None, elapsed: float, *, deadline: float, what: str,
               note: str = "") -> Call:
        call = Call(what, code, out, elapsed, deadline, note)
        with self._lock:
            self.calls.append(call)
        return call

    def slowest(self) -> Call | None:
        return max(self.calls, key=lambda c: c.elapsed, default=None)

    def codes(self) -> dict[int, int]:
        out: dict[int, int] = defaultdict(int)
        for c in self.calls:
            out[c.code] += 1
        return dict(sorted(out.items()))

    def report(self, outcome: str = "pass", **extra) -> dict:
        s = self.slowest()
        return {"cell": self.cell, "outcome": outcome, "calls": len(self.calls), "codes": self.codes(),
                "slowest_s": round(s.elapsed, 3) if s else None, "slowest_call": s.what if s else None,
                **extra}


def call_problems(log: CallLog) -> list[str]:
    """Calls answered late, or with something that is neither a result nor a CNI error object."""
    problems = []
    for c in log.calls:
        if c.elapsed > c.deadline:
            problems.append(f"{c.what}: answered after {c.elapsed:.2f}s, its deadline was {c.deadline:.2f}s")
        if c.code == 0:
            continue  # a success's stdout is checked by the cell (ADD: a result; DEL: may be empty)
        err = c.out
        if not (isinstance(err, dict) and isinstance(err.get("code"), int) and not isinstance(err.get("code"), bool)
                and isinstance(err.get("msg"), str) and isinstance(err.get("cniVersion"), str)):
            problems.append(f"{c.what}: exit {c.code} without a well-formed CNI error: {err!r:.200} {c.note}")
    return problems


def check_calls(log: CallLog) -> None:
    problems = call_problems(log)
    assert not problems, "\n".join(problems)


# --- the matrix report --------------------------------------------------------------------------
REPORT_ENV = "VNET_FAULT_MATRIX_REPORT"


def write_report(entry: dict, path: str | None = None) -> None:
    """Append one cell's line to the session's matrix report (JSON lines; $VNET_FAULT_MATRIX_REPORT,
    else /tmp/vnet-fault-matrix-<uid>.jsonl) and print it (seen with `pytest -s`)."""
    path = path or os.environ.get(REPORT_ENV) or f"/tmp/vnet-fault-matrix-{os.getuid()}.jsonl"
    line = json.dumps(entry, sort_keys=True)
    with open(path, "a") as f:
        f.write(line + "\n")
    print(f"\nfault-matrix {line}")
