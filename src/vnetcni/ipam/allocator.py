"""The pure allocator: which address a container gets, and what a release does.

No I/O, no clock: the caller passes `now` and holds the lock. Rules (each one a production
failure seen elsewhere, see docs/ipam.md):
- an owner (network, container, interface) asking again gets the address it holds;
- an address is never handed out twice, and the node's primary address never;
- a released address rests `reuseCooldownSeconds` before it is handed out again, unless nothing
  else is free, and then the one released longest ago goes first. Rested addresses are taken in
  the pool's numeric order, never "the first free key of a dict", which would be the one just freed;
- an address the metadata stopped listing stays with its holder (quarantined) and leaves the
  pool when released;
- dual-stack (an IPv6 pool beside the IPv4 one): a new owner gets one address of each family,
  both or neither (the node is full when either family is).
"""

from __future__ import annotations

from itertools import filterfalse

from ..cni.errors import CNIError, NO_ADDRESS_AVAILABLE, TRY_AGAIN_LATER
from .model import Allocation, Cooling, IpamState, NodePool, allocation_key


class PoolExhausted(CNIError):
    def __init__(self, in_use: int, total: int, family: str = "") -> None:
        what = f"no {family} address" if family else "no address"
        super().__init__(NO_ADDRESS_AVAILABLE, f"{what} available on this node: {in_use} of {total} in use",
                         "every secondary address of this node's NIC is held by a pod; the node's "
                         "max-pods must not exceed its secondary addresses (see `vnetctl capacity`)")
        self.in_use = in_use
        self.total = total


def usage(state: IpamState, pool: NodePool | None = None) -> tuple[int, int]:
    """(listed addresses held by someone, listed addresses): of `pool`, else of the first pool
    (a dual-stack node's capacity is that of its IPv4 pool: its IPv6 pool is far larger)."""
    pool = pool or state.pool
    listed = set(pool.addresses) if pool else set()
    held = state.held_ips()
    return len(listed & held), len(listed)


def pick_address(state: IpamState, now: float, pool: NodePool | None = None) -> str | None:
    """The address the next new owner gets from `pool` (default: the first one), or None when
    every listed address is held."""
    pool = pool or state.pool
    if pool is None:
        return None
    held = state.held_ips()
    held.add(pool.primary)
    resting = []
    for ip in filterfalse(held.__contains__, pool.addresses):  # free ones in numeric order (a C loop skips the held)
        cooling = state.cooling.get(ip)
        if cooling is None or cooling.reusable_after <= now:
            return ip
        resting.append(ip)
    if not resting:
        return None
    return min(resting, key=lambda ip: (state.cooling[ip].released, state.cooling[ip].reusable_after))


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
    picked = []
    for pool in state.pools:
        ip = pick_address(state, now, pool)
        if ip is None:
            family = f"IPv{6 if ':' in pool.subnet else 4}" if state.pool6 is not None else ""
            raise PoolExhausted(*usage(state, pool), family)
        picked.append((pool, ip))
    (pool, ip), six = picked[0], picked[1:]
    alloc = Allocation(address=pool.cidr(ip), gateway=pool.gateway, network=network,
                       container_id=container_id, ifname=ifname, allocated=now, pod_name=pod_name,
                       pod_namespace=pod_namespace)
    if six:
        alloc = alloc.replace(address6=six[0][0].cidr(six[0][1]), gateway6=six[0][0].gateway)
    state.allocations[alloc.key] = alloc
    for _, ip in picked:
        state.cooling.pop(ip, None)
    forget_rested(state, now)
    return alloc


def release(state: IpamState, key: str, now: float, cooldown: float) -> Allocation | None:
    """Free the owner's address (None when it held none). A quarantined address leaves the pool."""
    alloc = state.allocations.pop(key, None)
    if alloc is None:
        return None
    forget_rested(state, now)
    for ip in alloc.ips:
        if cooldown > 0 and any(ip in p.addresses for p in state.pools):
            state.cooling[ip] = Cooling(released=now, reusable_after=now + cooldown, previous_owner=key)
    return alloc


def apply_pool(state: IpamState, pool: NodePool, now: float, source: str,
               pool6: NodePool | None = None) -> None:
    """Adopt a freshly learned pool (and the IPv6 one beside it, dual-stack). Holders of
    addresses they no longer list keep them (quarantined, derived from the pools); cooling
    entries for such addresses are dropped."""
    state.pool = pool
    state.pool6 = pool6
    state.fetched_at = now
    state.pool_source = source
    listed = state.pool_ips()
    for ip in [ip for ip in state.cooling if ip not in listed]:
        del state.cooling[ip]
