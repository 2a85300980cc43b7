"""Start-up reconciliation: endpoint records whose pod namespace no longer exists.

After a node reboot (or a DEL that never came) the namespaces and veths are gone but the state
files are not. Each such record is pruned: its veth removed if it still exists, its vnet-ipam
allocation released (same state directory) and the record dropped. Run by vnetd at start and by
`vnetctl gc`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..dataplane.netns import netns_missing
from .endpoints import EndpointStore

@dataclass
class Reconciled:
    pruned: list[dict] = field(default_factory=list)
    kept: int = 0
    not_released: list[str] = field(default_factory=list)  # addresses another IPAM must release


def stale_records(state_dir: str) -> list[tuple[str, dict]]:
    return [(k, r) for k, r in EndpointStore(state_dir).all().items() if netns_missing(r.get("netns", ""))]


def reconcile(state_dir: str, dataplane, clock=time.time, dry_run: bool = False) -> Reconciled:
    store = EndpointStore(state_dir)
    out = Reconciled(kept=len(store.all()))
    stale = stale_records(state_dir)
    out.kept -= len(stale)
    if dry_run:
        out.pruned = [r for _, r in stale]
        return out
    for key, rec in stale:
        dataplane.delete_pod_link(rec["hostIfName"])
        ipam_dir = rec.get("ipamStateDir", state_dir)  # older records: vnet-ipam beside vnet
        if rec.get("ipam") == "vnet-ipam" and os.path.exists(os.path.join(ipam_dir, "ipam.json")):
            _release(ipam_dir, rec, clock())
        else:
            out.not_released.extend(rec.get("ips", []))
        store.remove(key)
        out.pruned.append(rec)
    return out


def _release(ipam_dir: str, rec: dict, now: float) -> None:
    from ..ipam.allocator import release
    from ..ipam.config import DEFAULT_COOLDOWN_SECONDS
    from ..ipam.model import allocation_key
    from ..ipam.store import IpamStore

    key = allocation_key(rec["network"], rec["containerId"], rec["ifName"])
    # The pod is gone, but stale ARP elsewhere may still point here: the usual cooldown applies.
    IpamStore(ipam_dir).apply(lambda state: release(state, key, now, DEFAULT_COOLDOWN_SECONDS))
