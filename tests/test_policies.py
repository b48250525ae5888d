"""L1 eviction policies: one contract for every registered policy, reference models
for the simple ones, behaviour on synthetic traces, and the L1 tier driving each."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Hashable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_cache_plugin._entry import Entry
from rag_cache_plugin._policies import (
    DEFAULT_POLICY,
    POLICIES,
    EvictionPolicy,
    LRUPolicy,
    make_policy,
    simulate,
)
from rag_cache_plugin._tiers import Ref
from rag_cache_plugin._tiers.memory import MemoryTier

NAMES = sorted(POLICIES)


class Driver:
    """Drives a policy the way ``MemoryTier`` does and checks it at every step."""

    def __init__(self, policy: EvictionPolicy, capacity: int) -> None:
        self.policy = policy
        self.capacity = capacity
        self.resident: set[Hashable] = set()
        self.hits = self.requests = 0

    def access(self, key: Hashable) -> bool:
        self.requests += 1
        if key in self.resident:
            self.hits += 1
            self.policy.on_hit(key)
            return True
        self.policy.on_miss(key)
        self.resident.add(key)
        self.policy.on_insert(key)
        while len(self.resident) > self.capacity:
            self.evict_one()
        return False

    def evict_one(self) -> Hashable | None:
        """What the tier does under byte pressure, even below the entry bound."""
        out = self.policy.victim()
        if not self.resident:
            assert out is None
            return None
        assert out in self.resident, f"victim {out!r} is not resident"
        self.remove(out)
        return out

    def remove(self, key: Hashable) -> None:
        self.resident.discard(key)
        self.policy.on_remove(key)


def footprint(policy: object) -> dict[str, int]:
    """Sizes of the containers a policy (and its own helper objects) hold."""
    sizes: dict[str, int] = {}

    def walk(obj: object, prefix: str, depth: int) -> None:
        names = [n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ())]
        names += list(getattr(obj, "__dict__", {}))
        for name in names:
            value = getattr(obj, name, None)
            if isinstance(value, dict | set | list | deque | bytearray | bytes):
                sizes[prefix + name] = len(value)
            elif depth and type(value).__module__.startswith("rag_cache_plugin"):
                walk(value, f"{prefix}{name}.", depth - 1)

    walk(policy, "", 1)
    return sizes


def skewed_trace(n: int, universe: int, seed: int) -> list[int]:
    """A Zipf-like trace (popularity ~ 1/rank) with a tail of one-off keys."""
    rng = random.Random(seed)
    return [int(universe ** rng.random()) for _ in range(n)]


# -- the contract every registered policy meets ------------------------------------


class TestPolicyContract:
    """Run against every name in ``POLICIES``; a new policy gets it by registering."""

    @pytest.fixture(params=NAMES)
    def name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    def test_registered_under_its_name(self, name: str) -> None:
        assert make_policy(name, 10).name == name

    def test_empty_policy_has_no_victim(self, name: str) -> None:
        assert make_policy(name, 10).victim() is None

    @pytest.mark.parametrize("capacity", [1, 2, 7, 64])
    def test_victim_is_always_resident(self, name: str, capacity: int) -> None:
        rng = random.Random(capacity)
        d = Driver(make_policy(name, capacity), capacity)
        for step in range(3000):
            roll = rng.random()
            if roll < 0.8:
                d.access(rng.randrange(capacity * 3) if roll < 0.6 else f"cold{step}")
            elif roll < 0.9 and d.resident:
                d.remove(rng.choice(sorted(d.resident, key=str)))  # deleted or expired
            else:
                d.evict_one()
            assert len(d.resident) <= capacity

    def test_removal_bookkeeping_is_exact(self, name: str) -> None:
        rng = random.Random(7)
        p = make_policy(name, 50)
        d = Driver(p, 50)
        keys = list(range(50))
        for k in keys:
            d.access(k)
        for k in rng.sample(keys, 30):
            d.access(k)  # some hits, so keys sit in different segments
        for k in rng.sample(keys, 50):
            d.remove(k)
            assert len(p) == len(d.resident)  # type: ignore[arg-type]
            victim = p.victim()
            assert victim is None if not d.resident else victim in d.resident
        assert p.victim() is None
        # Whatever tracks residents is empty; ghosts and sketches may remember history.
        held = {k: v for k, v in footprint(p).items() if not k.startswith(("_ghost", "sketch"))}
        assert all(v == 0 for v in held.values()), held
        d.access("again")  # usable after being emptied
        assert p.victim() == "again"

    def test_removing_an_absent_key_is_harmless(self, name: str) -> None:
        p = make_policy(name, 4)
        d = Driver(p, 4)
        for k in "abc":
            d.access(k)
        p.on_remove("never-seen")
        assert len(p) == 3  # type: ignore[arg-type]
        assert p.victim() in d.resident

    @pytest.mark.parametrize("capacity", [1, 3, 100])
    def test_capacity_respected_when_driven_like_the_tier(self, name: str, capacity: int) -> None:
        p = make_policy(name, capacity)
        d = Driver(p, capacity)
        for key in skewed_trace(20_000, capacity * 20, seed=capacity):
            d.access(key)
            assert len(d.resident) <= capacity
            assert len(p) == len(d.resident)  # type: ignore[arg-type]
        assert 0 < d.hits < d.requests

    def test_simulate_replays_like_the_driver(self, name: str) -> None:
        trace = skewed_trace(5_000, 2_000, seed=3)
        d = Driver(make_policy(name, 100), 100)
        for key in trace:
            d.access(key)
        assert simulate(name, trace, 100) == d.hits / d.requests
        assert simulate(POLICIES[name], trace, 100) == d.hits / d.requests  # a factory

    def test_deterministic(self, name: str) -> None:
        trace = skewed_trace(5_000, 3_000, seed=5)
        assert simulate(name, trace, 50) == simulate(name, trace, 50)

    def test_memory_stays_bounded_under_churn(self, name: str) -> None:
        capacity = 200
        p = make_policy(name, capacity)
        d = Driver(p, capacity)
        rng = random.Random(11)
        unique = iter(range(10**9, 10**10))

        def churn(n: int) -> None:
            for _ in range(n):
                # Half the traffic re-reads a hot set, half is never seen again.
                d.access(rng.randrange(capacity) if rng.random() < 0.5 else next(unique))

        churn(10 * capacity)
        early = footprint(p)
        churn(200 * capacity)
        late = footprint(p)
        assert early.keys() == late.keys()
        for field, size in late.items():
            assert size <= 3 * capacity or size == early[field], (field, early[field], size)
            assert size <= early[field] + capacity, (field, early[field], size)

    def test_constant_time_per_operation(self, name: str) -> None:
        # 10x the operations on a 10x larger cache: linear work takes ~10x as long, work
        # that grows with the number of residents per operation ~100x.
        def seconds(n: int, repeat: int) -> float:
            trace = skewed_trace(n, n, seed=n)
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                simulate(name, trace, n // 10)
                best = min(best, time.perf_counter() - start)
            return best

        small, large = seconds(20_000, 3), seconds(200_000, 2)
        assert large / small < 40, (small, large)


# -- reference models for the policies with simple semantics -----------------------

Op = tuple[str, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(["access", "access", "access", "remove", "evict"]), st.integers(0, 12)
    ),
    max_size=200,
)


class LRUModel:
    def __init__(self) -> None:
        self.order: list[Hashable] = []

    def access(self, key: Hashable) -> None:
        if key in self.order:
            self.order.remove(key)
        self.order.append(key)

    def remove(self, key: Hashable) -> None:
        self.order.remove(key)

    def keys(self) -> set[Hashable]:
        return set(self.order)

    def victim(self) -> Hashable | None:
        return self.order[0] if self.order else None


class LFUModel:
    """Fewest accesses since becoming resident; ties: least recently accessed.  The
    key just inserted goes last until the next access (room is made *for* it)."""

    def __init__(self) -> None:
        self.stats: dict[Hashable, tuple[int, int]] = {}
        self.clock = 0
        self.newest: Hashable | None = None

    def access(self, key: Hashable) -> None:
        self.clock += 1
        count = self.stats.get(key, (0, 0))[0]
        self.newest = None if count else key
        self.stats[key] = (count + 1, self.clock)

    def remove(self, key: Hashable) -> None:
        del self.stats[key]
        if key == self.newest:
            self.newest = None

    def keys(self) -> set[Hashable]:
        return set(self.stats)

    def victim(self) -> Hashable | None:
        others = [k for k in self.stats if k != self.newest] or list(self.stats)
        return min(others, key=self.stats.__getitem__) if others else None


@pytest.mark.parametrize(("name", "model"), [("lru", LRUModel), ("lfu", LFUModel)])
@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 8), sequence=ops)
def test_matches_reference_model(
    name: str, model: type[LRUModel | LFUModel], capacity: int, sequence: list[Op]
) -> None:
    d = Driver(make_policy(name, capacity), capacity)
    ref = model()
    for op, key in sequence:
        if op == "access":
            hit = key in d.resident
            ref.access(key)
            while len(ref.keys()) > capacity:
                ref.remove(ref.victim())
            assert d.access(key) is hit
        elif op == "remove" and key in d.resident:
            d.remove(key)
            ref.remove(key)
        elif op == "evict":
            expected = ref.victim()
            assert d.evict_one() == expected
            if expected is not None:
                ref.remove(expected)
        assert d.resident == ref.keys()
        assert d.policy.victim() == ref.victim()


# -- behaviour on synthetic traces --------------------------------------------------


def scan_trace(capacity: int, rounds: int, seed: int) -> Iterator[int]:
    """A hot set (half the capacity) re-read between one-pass scans of new keys that
    are each three times the capacity: every scan alone flushes an LRU cache."""
    rng = random.Random(seed)
    hot = list(range(capacity // 2))
    fresh = iter(range(10**6, 10**9))
    for _ in range(rounds):
        for _ in range(3):
            rng.shuffle(hot)
            yield from hot
        for _ in range(3 * capacity):
            yield next(fresh)


@pytest.mark.parametrize("name", ["tinylfu", "s3fifo", "lfu"])
def test_frequency_aware_policies_keep_the_hot_set_through_scans(name: str) -> None:
    trace = list(scan_trace(200, rounds=10, seed=1))
    lru = simulate("lru", trace, 200)
    other = simulate(name, trace, 200)
    # Only the hot set can ever hit: LRU re-loads it after every scan, a scan-resistant
    # policy keeps it.  Hot reads are 1/3 of the trace, 2/3 of them hit even for LRU.
    assert other > lru + 0.08, (lru, other)
    d = Driver(make_policy(name, 200), 200)
    for key in trace:
        d.access(key)
    assert sum(k in d.resident for k in range(100)) >= 90  # still resident after a scan


def test_lru_is_flushed_by_a_scan() -> None:
    d = Driver(LRUPolicy(), 200)
    for key in scan_trace(200, rounds=1, seed=1):
        d.access(key)
    assert not any(k in d.resident for k in range(100))


def test_lfu_keeps_frequent_keys() -> None:
    d = Driver(make_policy("lfu", 10), 10)
    for _ in range(5):
        for k in range(5):
            d.access(k)
    for k in range(100, 1000):  # many keys read once or twice
        d.access(k)
        d.access(k)
    assert set(range(5)) <= d.resident


def test_tinylfu_window_adapts_to_recency() -> None:
    # Keys come back once, shortly after their first read: only recency can hit, so
    # the window should grow from its 1% start and the policy approach LRU.
    capacity = 100
    trace = [k for i in range(20_000) for k in (i, i - 30) if k >= 0]
    policy = make_policy("tinylfu", capacity)
    d = Driver(policy, capacity)
    for key in trace:
        d.access(key)
    assert policy.window_max > capacity // 2  # type: ignore[attr-defined]
    assert d.hits / d.requests >= simulate("lru", trace, capacity) - 0.01


def test_registry() -> None:
    assert {"lru", "lfu", "tinylfu", "s3fifo"} <= POLICIES.keys()
    assert DEFAULT_POLICY in POLICIES
    with pytest.raises(ValueError, match="unknown eviction policy"):
        make_policy("fifo-ish", 10)


def test_simulate_edge_cases() -> None:
    assert simulate("lru", [], 10) == 0.0
    assert simulate("tinylfu", [1, 1, 1], 0) == 0.0
    assert simulate("lru", [1, 1, 1, 1], 1) == 0.75


# -- the L1 tier with each policy ---------------------------------------------------

_OVERHEAD = 256  # MemoryTier's per-entry allowance beyond the encoded size


def entry(
    key: str,
    *,
    size: int = 100,
    tags: tuple[str, ...] = (),
    expires: float | None = None,
    namespace: str = "ns",
) -> Entry:
    return Entry(
        key=key,
        namespace=namespace,
        partition="p",
        question=key,
        value=key,
        created=0.0,
        expires=expires,
        tags=tags,
        raw=b"x" * size,
    )


def ref(key: str, namespace: str = "ns") -> Ref:
    return Ref(key, namespace, "p")


class TestMemoryTierWithEachPolicy:
    @pytest.fixture(params=NAMES)
    def name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    def replay(self, tier: MemoryTier, trace: list[int], now: float = 0.0, **kw: Any) -> int:
        hits = 0
        for k in trace:
            key = f"k{k}"
            if tier.get(ref(key), now) is not None:
                hits += 1
            else:
                tier.set(entry(key, **kw), now)
            assert len(tier) <= tier.max_entries
            assert tier.bytes_used <= tier.max_bytes
            assert len(tier.policy) == len(tier)  # type: ignore[arg-type]
        return hits

    def test_entry_bound(self, name: str) -> None:
        tier = MemoryTier(max_entries=50, max_bytes=10**9, policy=name)
        trace = skewed_trace(5_000, 1_000, seed=2)
        hits = self.replay(tier, trace)
        assert len(tier) == 50
        # The tier calls the policy exactly as ``simulate`` does.
        assert hits / len(trace) == simulate(name, [f"k{k}" for k in trace], 50)

    def test_byte_bound_below_the_entry_bound(self, name: str) -> None:
        per_entry = 1_000 + _OVERHEAD
        tier = MemoryTier(max_entries=1_000, max_bytes=20 * per_entry, policy=name)
        self.replay(tier, skewed_trace(3_000, 500, seed=4), size=1_000)
        assert len(tier) == 20
        tier.resize(max_bytes=5 * per_entry)
        assert len(tier) == 5 and tier.bytes_used == 5 * per_entry
        tier.resize(max_entries=2)
        assert len(tier) == 2 and len(tier.policy) == 2  # type: ignore[arg-type]

    def test_tags_invalidate_and_bookkeeping_survives(self, name: str) -> None:
        tier = MemoryTier(max_entries=20, max_bytes=10**9, policy=name)
        for i in range(20):
            tier.set(entry(f"t{i}", tags=("even",) if i % 2 == 0 else ()), 0.0)
        removed = tier.invalidate("ns", ["even"])
        assert sorted(r.key for r in removed) == sorted(f"t{i}" for i in range(0, 20, 2))
        assert all(tier.get(ref(f"t{i}"), 0.0) is None for i in range(0, 20, 2))
        assert len(tier.policy) == len(tier) == 10  # type: ignore[arg-type]
        self.replay(tier, list(range(100)))  # evictions still find resident victims
        assert len(tier) == 20

    def test_expiry(self, name: str) -> None:
        tier = MemoryTier(max_entries=10, max_bytes=10**9, policy=name, max_age=100.0)
        tier.set(entry("short", expires=5.0), 0.0)
        tier.set(entry("long"), 0.0)
        assert tier.get(ref("short"), 4.0) is not None
        assert tier.get(ref("short"), 6.0) is None
        assert "short" not in tier and len(tier.policy) == 1  # type: ignore[arg-type]
        assert tier.get(ref("long"), 99.0) is not None
        assert tier.get(ref("long"), 101.0) is None  # capped by max_age
        assert len(tier) == 0 and tier.policy.victim() is None

    def test_clear_namespace_and_swap_policy(self, name: str) -> None:
        tier = MemoryTier(max_entries=10, max_bytes=10**9, policy="lru")
        for i in range(6):
            tier.set(entry(f"c{i}", namespace="a" if i < 3 else "b"), 0.0)
        tier.set_policy(name)
        tier.clear("a")
        assert sorted(tier.keys()) == ["c3", "c4", "c5"]
        assert len(tier.policy) == 3  # type: ignore[arg-type]
        self.replay(tier, list(range(30)))
        assert len(tier) == 10
