"""The pure allocator: which address a container gets, and what a release does.

No I/O, no clock: the caller passes `now` and holds the lock. Rules (each one a production
failure seen elsewhere, see docs/ipam.md):
- an owner (network, container, interface) asking again gets the address it holds;
- an address is never handed out twice, and the node's primary address never;
- a released address rests `reuseCooldownSeconds` before it is handed out again, unless nothing
  else is free, and then the one released longest ago goes first. Rested addresses are taken in
  the pool's numeric order, never "the first free key of a dict", which would be the one just freed;
- an address the metadata stopped listing stays with its holder (quarantined) and leaves the
  pool when released.
"""

from __future__ import annotations

from ..cni.errors import CNIError, NO_ADDRESS_AVAILABLE, TRY_AGAIN_LATER
from .model import Allocation, Cooling, IpamState, NodePool, allocation_key


class PoolExhausted(CNIError):
    def __init__(self, in_use: int, total: int) -> None:
        super().__init__(NO_ADDRESS_AVAILABLE, f"no address available on this node: {in_use} of {total} in use",
                         "every secondary address of this node's NIC is held by a pod; the node's "
                         "max-pods must not exceed its secondary addresses (see `vnetctl capacity`)")
        self.in_use = in_use
        self.total = total


def usage(state: IpamState) -> tuple[int, int]:
    """(listed addresses held by someone, listed addresses)."""
    listed = state.pool_ips()
    held = set(state.holders())
    return len(listed & held), len(listed)


def pick_address(state: IpamState, now: float) -> str | None:
    """The address the next new owner gets, or None when every listed address is held."""
    if state.pool is None:
        return None
    held = state.holders()
    free = [ip for ip in state.pool.addresses if ip not in held and ip != state.pool.primary]
    if not free:
        return None
    for ip in free:  # numeric order
        cooling = state.cooling.get(ip)
        if cooling is None or cooling.reusable_after <= now:
            return ip
    return min(free, key=lambda ip: (state.cooling[ip].released, state.cooling[ip].reusable_after))


def forget_rested(state: IpamState, now: float) -> None:
    """Drop cooling entries whose rest is over (they are plain free addresses again)."""
    for ip in [ip for ip, c in state.cooling.items() if c.reusable_after <= now]:
        del state.cooling[ip]


def allocate(state: IpamState, network: str, container_id: str, ifname: str, now: float,
             pod_name: str = "", pod_namespace: str = "") -> Allocation:
    """The owner's address: the one it holds, else a new one. PoolExhausted changes nothing."""
    existing = state.allocations.get(allocation_key(network, container_id, ifname))
    if existing is not None:
        return existing
    if state.pool is None:
        raise CNIError(TRY_AGAIN_LATER, "no address pool learned yet")
    ip = pick_address(state, now)
    if ip is None:
        raise PoolExhausted(*usage(state))
    alloc = Allocation(address=state.pool.cidr(ip), gateway=state.pool.gateway, network=network,
                       container_id=container_id, ifname=ifname, allocated=now, pod_name=pod_name,
                       pod_namespace=pod_namespace)
    state.allocations[alloc.key] = alloc
    state.cooling.pop(ip, None)
    forget_rested(state, now)
    return alloc


def release(state: IpamState, key: str, now: float, cooldown: float) -> Allocation | None:
    """Free the owner's address (None when it held none). A quarantined address leaves the pool."""
    alloc = state.allocations.pop(key, None)
    if alloc is None:
        return None
    forget_rested(state, now)
    if alloc.ip in state.pool_ips() and cooldown > 0:
        state.cooling[alloc.ip] = Cooling(released=now, reusable_after=now + cooldown, previous_owner=key)
    return alloc


def apply_pool(state: IpamState, pool: NodePool, now: float, source: str) -> None:
    """Adopt a freshly learned pool. Holders of addresses it no longer lists keep them
    (quarantined, derived from the pool); cooling entries for such addresses are dropped."""
    state.pool = pool
    state.fetched_at = now
    state.pool_source = source
    listed = set(pool.addresses)
    for ip in [ip for ip in state.cooling if ip not in listed]:
        del state.cooling[ip]
