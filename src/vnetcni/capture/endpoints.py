"""Finding a pod in a node's endpoint records (<stateDir>/endpoints.json, written by `vnet`).

A pod is named by podName (optionally NAMESPACE/NAME or with -n), by one of its addresses, or by
its container ID or a unique prefix of it.
"""

from __future__ import annotations

import ipaddress
import os

from ..cni.errors import CNIError
from ..node.layout import NodeLayout
from ..plugins.endpoints import EndpointStore
from .errors import BadInput, CaptureError

MIN_ID_PREFIX = 4


def load_records(state_dir: str) -> list[dict]:
    """The node's endpoint records; none when the node has no state of ours."""
    if not os.path.exists(NodeLayout(state_dir).endpoints_file):
        return []
    try:
        return [r.to_dict() for r in EndpointStore(state_dir).all().values()]
    except PermissionError:
        raise CaptureError(f"cannot read the endpoint records in {state_dir}: permission denied",
                           "run it as root") from None
    except CNIError as exc:
        raise CaptureError(f"cannot read the endpoint records in {state_dir}: {exc.msg}") from None


def as_address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.split("/")[0] if text.count("/") == 1 and
                                        text.split("/")[1].isdigit() else text))
    except ValueError:
        return None


def record_addresses(record: dict) -> list[str]:
    out = []
    for ip in record.get("ips") or []:
        address = as_address(str(ip))
        if address:
            out.append(address)
    return out


def split_pod_name(query: str, namespace: str | None) -> tuple[str, str | None]:
    """'NS/NAME' is accepted for NAME with -n NS (a leading '/' is a path, not a pod)."""
    if "/" in query and not query.startswith("/") and query.count("/") == 1:
        ns, name = query.split("/")
        if namespace and namespace != ns:
            raise BadInput(f"pod {query!r} names namespace {ns!r} but -n says {namespace!r}")
        return name, ns
    return query, namespace


def display_name(record: dict) -> str:
    name = record.get("podName")
    if name:
        return f"{record.get('podNamespace') or 'default'}/{name}"
    return str(record.get("containerId", "?"))[:12]


def _prefer_primary(found: list[dict]) -> list[dict]:
    """A pod with several attachments of ours is captured on its eth0 unless told otherwise."""
    primary = [r for r in found if r.get("ifName", "eth0") == "eth0"]
    return primary if len(primary) == 1 and len(found) > 1 else found


def match_records(records: list[dict], query: str, namespace: str | None) -> list[dict]:
    """The records naming this pod (an empty list when none do)."""
    address = as_address(query)
    if address:
        return _prefer_primary([r for r in records if address in record_addresses(r)])
    name, ns = split_pod_name(query, namespace)
    by_name = [r for r in records if r.get("podName") == name and
               (ns is None or (r.get("podNamespace") or "default") == ns)]
    if by_name:
        return _prefer_primary(by_name)
    if ns is None or "/" not in query:
        by_id = [r for r in records if str(r.get("containerId", "")) == query]
        if not by_id and len(query) >= MIN_ID_PREFIX:
            by_id = [r for r in records if str(r.get("containerId", "")).startswith(query)]
        if namespace:
            by_id = [r for r in by_id if (r.get("podNamespace") or "default") == namespace]
        return _prefer_primary(by_id)
    return []


def single_record(found: list[dict], query: str) -> dict:
    if len(found) == 1:
        return found[0]
    names = sorted({display_name(r) + f" ({r.get('containerId', '?')[:12]}, {r.get('ifName')})"
                    for r in found})
    raise BadInput(f"{query!r} matches {len(found)} endpoints: {', '.join(names)}",
                   "name the pod with -n NAMESPACE, its full container ID or its address")
