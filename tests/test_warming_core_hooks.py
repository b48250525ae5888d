"""The core's small hooks for warming: ``Stored`` carries the expiry and a digest of
the value, ``RagCache.bypass``, ``MemoryTier.peek`` and ``FlightTable.atry_lead``."""

from __future__ import annotations

import asyncio

from rag_cache_plugin import CacheConfig, Miss, RagCache, Stored
from rag_cache_plugin._flight import FlightTable


def test_stored_carries_expiry_and_a_digest_of_the_value() -> None:
    with RagCache(CacheConfig(ttl=60), clock=lambda: 1000.0) as cache:
        seen: list[Stored] = []
        cache.bus.subscribe(seen.append, (Stored,))
        cache.store("q", {"a": 1, "b": [1, 2]})
        cache.store("q", {"b": [1, 2], "a": 1})  # the same value, other key order
        cache.store("q", {"a": 2, "b": [1, 2]})
        cache.store("never expires", "x", ttl=None)
    assert [s.expires for s in seen] == [1060.0, 1060.0, 1060.0, 1060.0]  # default TTL
    assert seen[0].digest == seen[1].digest != seen[2].digest
    assert len(seen[0].digest) == 16


async def test_bypass_misses_only_its_keys_in_its_own_context() -> None:
    async with RagCache(CacheConfig()) as cache:
        cache.store("a", 1)
        cache.store("b", 2)
        misses: list[Miss] = []
        cache.bus.subscribe(misses.append, (Miss,))
        key_a = cache.ref("a").key
        other_context: list[object] = []
        started = asyncio.Event()
        release = asyncio.Event()

        async def elsewhere() -> None:
            await started.wait()
            other_context.append(await cache.alookup("a"))
            release.set()

        task = asyncio.create_task(elsewhere())  # created outside the block
        with cache.bypass([key_a]):
            assert cache.lookup("a") is None and await cache.alookup("a") is None
            assert cache.lookup("b") is not None
            inner = asyncio.create_task(cache.alookup("a"))  # inherits the context
            assert await inner is None
            started.set()
            await release.wait()
        await task
        assert other_context[0] is not None  # others keep hitting the current entry
        assert cache.lookup("a") is not None  # and so does this context afterwards
        assert [m.reason for m in misses] == ["bypassed"] * 3
        assert cache._bypassing == 0


def test_peek_leaves_the_eviction_policy_alone() -> None:
    with RagCache(CacheConfig(l1_max_entries=2, l1_policy="lru")) as cache:
        cache.store("old", 1)
        cache.store("new", 2)
        ref = cache.ref("old")
        assert cache.l1.peek(ref.key, 0.0) is not None  # a lookup would make "old" recent
        cache.store("newest", 3)
        assert cache.l1.peek(ref.key, 0.0) is None and len(cache.l1) == 2


async def test_atry_lead_never_waits() -> None:
    async with RagCache(CacheConfig()) as cache:
        table = FlightTable(cache, 5.0, lock_suffix=":warm")
        ref = cache.ref("q")
        assert await table.atry_lead(ref)

        async def other() -> bool:
            return await table.atry_lead(ref)

        assert not await asyncio.create_task(other())  # held by this task
        await table.arelease(ref)
        assert await asyncio.create_task(other())  # free again ...
        await asyncio.sleep(0)  # ... and released when that task ended (its done callback)
        assert len(table) == 0 and len(cache.flights) == 0
