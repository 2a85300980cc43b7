"""The node's state files (ipam.json, endpoints.json) read as one JSON document each, by a reader
of their own (not the code under test): a schemaVersion 1 file is one JSON document; a
schemaVersion 2 file is a journal (src/vnetcni/state/journal.py): a header line, `rows` snapshot
rows {t, k, v}, then `changes` numbered changes (a row put, a row removed with v null, or the
header's fields set by {"n", "head": {field: value}}). What follows them is an append that was never
committed. Returns {} for a missing or empty file."""

from __future__ import annotations

import json
import os

META = ("changes", "kind", "schemaVersion", "rows")
TABLES = {"vnet-ipam": ("allocations", "cooling"), "vnet-endpoints": ("endpoints",)}


def load_state(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    if not raw.strip():
        return {}
    header = json.loads(raw.split(b"\n", 1)[0]) if raw.startswith(b'{"changes": ') else None
    if header is None:
        return json.loads(raw)  # one document
    lines = raw.split(b"\n")[:1 + header["rows"] + header["changes"]]
    if len(lines) != 1 + header["rows"] + header["changes"]:
        raise ValueError(f"{path} is truncated")
    doc = {k: v for k, v in header.items() if k not in META}
    tables = {name: {} for name in TABLES[header["kind"]]}
    rows = header["rows"]
    for i, line in enumerate(lines[1:]):
        entry = json.loads(line)
        if i >= rows and entry["n"] != i - rows + 1:
            raise ValueError(f"{path}: change {entry['n']} out of order")
        if "head" in entry:
            doc.update(entry["head"])
        elif entry["v"] is None:
            tables[entry["t"]].pop(entry["k"], None)
        else:
            tables[entry["t"]][entry["k"]] = entry["v"]
    return {**doc, "kind": header["kind"], "schemaVersion": 2, **tables}


def ipam_doc(state_dir: str) -> dict:
    return load_state(os.path.join(state_dir, "ipam.json"))


def endpoints_doc(state_dir: str) -> dict:
    return load_state(os.path.join(state_dir, "endpoints.json"))


def endpoint_records(state_dir: str) -> dict:
    return dict(endpoints_doc(state_dir).get("endpoints") or {})


def allocations(state_dir: str) -> dict:
    return dict(ipam_doc(state_dir).get("allocations") or {})
