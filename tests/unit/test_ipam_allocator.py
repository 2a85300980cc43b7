"""The pure allocator: examples for each rule, then a hypothesis state machine that drives
ADD/DEL/time/metadata changes at random and checks every rule after every step."""

from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vnetcni.cni.errors import CNIError
from vnetcni.ipam.allocator import PoolExhausted, allocate, apply_pool, pick_address, release
from vnetcni.ipam.model import IpamState, NodePool

PRIMARY = "10.240.0.35"


def pool_of(hosts) -> NodePool:
    return NodePool(subnet="10.240.0.0/16", gateway="10.240.0.1", primary=PRIMARY, mac="00:0d:3a:51:c4:90",
                    addresses=tuple(f"10.240.0.{h}" for h in sorted(hosts)))


def state_with(hosts) -> IpamState:
    state = IpamState()
    apply_pool(state, pool_of(hosts), 0.0, "test")
    return state


def add(state, cid, now=0.0, network="net"):
    return allocate(state, network, cid, "eth0", now)


def test_addresses_in_numeric_order_and_with_the_subnet_prefix():
    state = state_with(range(36, 66))
    a = add(state, "a")
    assert a.address == "10.240.0.36/16" and a.gateway == "10.240.0.1"
    assert add(state, "b").address == "10.240.0.37/16"


def test_same_owner_gets_the_same_address():
    state = state_with(range(36, 40))
    first = add(state, "a")
    assert add(state, "a", now=5.0) is first
    assert allocate(state, "net", "a", "net1", 0.0).ip != first.ip  # another interface, another address
    assert allocate(state, "other", "a", "eth0", 0.0).ip != first.ip  # another network too


def test_just_freed_address_is_not_the_next_one_handed_out():
    """The dict-ordering trap: after a release, a naive 'first free' returns the freed address."""
    state = state_with(range(36, 40))
    a = add(state, "a")
    add(state, "b")
    release(state, a.key, now=10.0, cooldown=30.0)
    assert add(state, "c", now=11.0).ip == "10.240.0.38"


def test_rested_addresses_are_free_again_in_numeric_order():
    state = state_with(range(36, 40))
    a = add(state, "a")
    release(state, a.key, now=10.0, cooldown=30.0)
    assert add(state, "c", now=40.0).ip == "10.240.0.36"
    assert state.cooling == {}


def test_when_only_cooling_addresses_are_free_the_one_freed_longest_ago_goes():
    state = state_with(range(36, 39))
    allocs = [add(state, c) for c in "abc"]
    release(state, allocs[2].key, now=10.0, cooldown=30.0)  # .38 first
    release(state, allocs[0].key, now=11.0, cooldown=30.0)  # then .36
    assert add(state, "d", now=12.0).ip == "10.240.0.38"
    assert add(state, "e", now=12.0).ip == "10.240.0.36"


def test_zero_cooldown_makes_a_released_address_plainly_free():
    state = state_with(range(36, 38))
    a = add(state, "a")
    release(state, a.key, now=1.0, cooldown=0.0)
    assert state.cooling == {}
    assert add(state, "b", now=1.0).ip == "10.240.0.36"


def test_exhaustion_is_code_100_with_the_exact_message_and_changes_nothing():
    state = state_with(range(36, 66))
    for i in range(30):
        add(state, f"c{i}")
    before = state.to_doc()
    with pytest.raises(PoolExhausted) as info:
        add(state, "c30")
    assert info.value.code == 100
    assert info.value.msg == "no address available on this node: 30 of 30 in use"
    assert state.to_doc() == before


def test_no_pool_is_try_again_later():
    with pytest.raises(CNIError) as info:
        add(IpamState(), "a")
    assert info.value.code == 11


def test_release_of_nothing_is_none():
    assert release(state_with([36]), "net/nope/eth0", 0.0, 30.0) is None


def test_quarantine_keeps_the_holder_and_drops_the_address_on_release():
    state = state_with(range(36, 39))
    a, b = add(state, "a"), add(state, "b")
    apply_pool(state, pool_of([37, 38]), 5.0, "test")  # metadata stops listing .36 (held by a)
    assert state.allocations[a.key] is a and [q.key for q in state.quarantined()] == [a.key]
    assert add(state, "a") is a  # still the holder's
    assert add(state, "c").ip == "10.240.0.38"
    with pytest.raises(PoolExhausted, match="2 of 2 in use"):
        add(state, "d")
    release(state, a.key, 6.0, 30.0)
    assert "10.240.0.36" not in state.cooling  # left the pool, nothing to cool
    release(state, b.key, 6.0, 0.0)
    assert add(state, "e", 7.0).ip == "10.240.0.37"


def test_the_primary_is_never_picked_even_if_listed():
    state = IpamState()
    apply_pool(state, NodePool("10.240.0.0/16", "10.240.0.1", PRIMARY, "m", ("10.240.0.35", "10.240.0.36")), 0, "t")
    assert add(state, "a").ip == "10.240.0.36"
    assert pick_address(state, 0.0) is None


class AllocatorMachine(RuleBasedStateMachine):
    """Random ADD / DEL / clock / metadata changes; after each, every rule must still hold."""

    HOSTS = list(range(36, 44))
    OWNERS = [f"c{i}" for i in range(12)]

    def __init__(self) -> None:
        super().__init__()
        self.state = state_with(self.HOSTS[:5])
        self.now = 0.0
        self.cooldown = 30.0
        self.released_at: dict[str, float] = {}  # our own record of releases, independent of the allocator

    @rule(owner=st.sampled_from(OWNERS))
    def add(self, owner):
        state, now = self.state, self.now
        held = {a.ip for a in state.allocations.values()}
        existing = state.allocations.get(f"net/{owner}/eth0")
        listed = list(state.pool.addresses)
        free = [ip for ip in listed if ip not in held]
        before = state.to_doc()
        try:
            alloc = allocate(state, "net", owner, "eth0", now)
        except PoolExhausted as exc:
            assert existing is None and not free
            assert exc.msg == f"no address available on this node: {len(set(listed) & held)} of {len(listed)} in use"
            assert state.to_doc() == before
            return
        if existing is not None:
            assert alloc is existing
            return
        assert alloc.ip in free and alloc.ip != PRIMARY  # listed, not held, never the primary
        cooling = [ip for ip in free if now - self.released_at.get(ip, float("-inf")) < self.cooldown]
        rested = [ip for ip in free if ip not in cooling]
        if rested:
            assert alloc.ip == rested[0]  # a rested one, lowest first
        else:
            assert alloc.ip == min(cooling, key=lambda ip: self.released_at[ip])  # freed longest ago

    @rule(owner=st.sampled_from(OWNERS))
    def delete(self, owner):
        key = f"net/{owner}/eth0"
        held = self.state.allocations.get(key)
        listed = held is not None and held.ip in self.state.pool_ips()
        released = release(self.state, key, self.now, self.cooldown)
        assert released is held
        if held is not None:
            assert key not in self.state.allocations
            if listed:
                self.released_at[held.ip] = self.now
            else:
                assert held.ip not in self.state.cooling  # quarantined: leaves the pool

    @rule(seconds=st.sampled_from([0.0, 1.0, 10.0, 29.0, 31.0]))
    def tick(self, seconds):
        self.now += seconds

    @rule(hosts=st.sets(st.sampled_from(HOSTS), max_size=len(HOSTS)))
    def metadata_changes(self, hosts):
        apply_pool(self.state, pool_of(hosts), self.now, "test")
        for ip in list(self.released_at):
            if ip not in self.state.pool_ips():
                del self.released_at[ip]  # a re-listed address starts afresh

    @precondition(lambda self: self.state.allocations)
    @rule()
    def quarantined_are_never_handed_out(self):
        quarantined = {a.ip for a in self.state.quarantined()}
        assert pick_address(self.state, self.now) not in quarantined

    @invariant()
    def never_duplicate_never_primary(self):
        ips = [a.ip for a in self.state.allocations.values()]
        assert len(ips) == len(set(ips))
        assert PRIMARY not in ips

    @invariant()
    def document_round_trips(self):
        doc = self.state.to_doc()
        assert IpamState.from_doc(doc).to_doc() == doc


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
