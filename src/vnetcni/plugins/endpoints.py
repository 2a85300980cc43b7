"""The endpoint records: one durable entry per pod attachment, for DEL, CHECK, GC and operators."""

from __future__ import annotations

import hashlib

from ..node.layout import DEFAULT_STATE_DIR, NodeLayout
from ..state.durable import DurableDocument

KIND = "vnet-endpoints"
SCHEMA_VERSION = 1


def endpoint_key(network: str, container_id: str, ifname: str) -> str:
    return f"{network}/{container_id}/{ifname}"


def host_ifname(network: str, container_id: str, ifname: str) -> str:
    """Deterministic host-side name: 'azv' + 11 hex characters of a hash of the attachment,
    so DEL finds the veth even without a record (15 characters, the kernel's limit)."""
    digest = hashlib.sha256(endpoint_key(network, container_id, ifname).encode()).hexdigest()
    return "azv" + digest[:11]


class EndpointStore:
    def __init__(self, state_dir: str = DEFAULT_STATE_DIR) -> None:
        self.state_dir = state_dir
        self.doc = DurableDocument(NodeLayout(state_dir).endpoints_file, KIND, SCHEMA_VERSION,
                                   lambda: {"endpoints": {}})

    def all(self) -> dict[str, dict]:
        return self.doc.read()["endpoints"]

    def get(self, key: str) -> dict | None:
        return self.all().get(key)

    def put(self, record: dict) -> None:
        key = endpoint_key(record["network"], record["containerId"], record["ifName"])
        self.doc.apply(lambda doc: doc["endpoints"].__setitem__(key, record))

    def remove(self, key: str) -> dict | None:
        return self.doc.apply(lambda doc: doc["endpoints"].pop(key, None))
