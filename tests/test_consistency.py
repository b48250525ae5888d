"""Races and repairs, made deterministic: a promotion never overwrites a newer entry
a concurrent store wrote; a write that failed during an outage never leaves an older
version to be served afterwards; a key re-stored after it expired is kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig
from rag_cache_plugin._entry import Entry
from rag_cache_plugin._localredis import LocalRedis
from tests.support.load import wait_for


@pytest.mark.redis
@pytest.mark.parametrize("promote_to", [("l1",), ("l1", "l2")])
def test_promotion_never_overwrites_a_concurrent_store(
        tmp_path: Path, redis_url: str, promote_to: tuple[str, ...]) -> None:
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url),
                      promote_to=promote_to)  # type: ignore[arg-type]
    with RagCache(cfg) as cache:
        assert cache.l3 is not None and cache.l2 is not None
        cache.store("q", "v1")
        cache.l1.clear()
        cache.l2.clear()
        l3_get = cache.l3.get

        def racing_get(ref: Any, now: float) -> Entry | None:
            old = l3_get(ref, now)  # the lookup has read v1 from L3 ...
            cache.store("q", "v2")  # ... when another thread stores v2
            return old

        cache.l3.get = racing_get  # type: ignore[method-assign]
        first = cache.lookup("q")
        cache.l3.get = l3_get  # type: ignore[method-assign]
        # Read in the middle of a store: v1 is a fair answer, but it must not stick.
        assert first is not None and first.value == "v1"
        assert cache.lookup("q").value == "v2"  # type: ignore[union-attr]
        cache.l1.clear()
        assert cache.lookup("q").value == "v2"  # type: ignore[union-attr]


def test_l2_promotion_keeps_a_live_row_and_replaces_an_expired_one(tmp_path: Path) -> None:
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db", l1_max_entries=0)) as cache:
        assert cache.l2 is not None
        cache.store("q", "new", tags=["t-new"])
        ref = cache.ref("q")
        now = time.time()
        old = Entry(ref.key, ref.namespace, ref.partition, "q", "old", now - 10, None, ("t-old",))
        cache.codec.encode(old)
        cache.l2.set(old, now, replace=False)
        assert cache.lookup("q").value == "new"  # type: ignore[union-attr]
        assert cache.invalidate(tags=["t-old"]) == 0  # its tags were left alone too
        assert cache.invalidate(tags=["t-new"]) == 1
        cache.store("q2", "short", ttl=0.05)
        time.sleep(0.1)
        ref2 = cache.ref("q2")
        fresh = Entry(ref2.key, ref2.namespace, ref2.partition, "q2", "promoted", time.time())
        cache.codec.encode(fresh)
        cache.l2.set(fresh, time.time(), replace=False)
        assert cache.lookup("q2").value == "promoted"  # type: ignore[union-attr]


def test_key_restored_after_expiry_is_kept(tmp_path: Path) -> None:
    """A read that finds an expired row queues its deletion for the next write; that
    write may be the new store of the same key, which must survive it."""
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db", l1_max_entries=0)) as cache:
        cache.store("q", "old", ttl=0.05)
        time.sleep(0.1)
        assert cache.lookup("q") is None  # expired: deletion queued
        cache.store("q", "new", ttl=60)
        assert cache.lookup("q").value == "new"  # type: ignore[union-attr]


@pytest.mark.redis
@pytest.mark.parametrize("api", ["sync", "async"])
def test_write_that_failed_in_an_outage_leaves_no_older_version(
        api: str, figures: Callable[..., str]) -> None:
    """v1 is in L3; L3 hangs while v2 is stored, so L3 keeps v1.  After the outage the
    shared tier must not hand v1 to anyone (another process would trust it)."""
    import asyncio

    with LocalRedis() as server:
        cfg = CacheConfig(redis=RedisConfig(url=server.url, timeout=0.2, breaker_reset=0.3),
                          news_poll_interval=0.05)
        with RagCache(cfg) as cache, RagCache(cfg) as peer:
            cache.store("q", "v1")
            assert peer.lookup("q").value == "v1"  # type: ignore[union-attr]
            peer.l1.clear()
            server.pause()
            try:
                t = time.perf_counter()
                if api == "sync":
                    assert cache.store("q", "v2") is True  # L1 has it; L3 timed out
                else:
                    assert asyncio.run(cache.astore("q", "v2")) is True
                store_s = time.perf_counter() - t
            finally:
                server.resume()
            t = time.perf_counter()
            assert wait_for(lambda: not cache._replay, 10.0), "the repair never ran"
            repair_s = time.perf_counter() - t
            seen = peer.lookup("q")
            assert cache.l3 is not None
            left = cache.l3.get(cache.ref("q"), time.time())
    figures(f"failed-write-repair-{api}", store_s=store_s, repair_s=repair_s,
            peer_sees=None if seen is None else seen.value,
            l3_holds=None if left is None else left.value)
    assert seen is None or seen.value == "v2"
    assert left is None or left.value == "v2"


def test_a_key_awaiting_repair_is_not_read_and_leaves_the_probe(redis_url: str) -> None:
    """While a repair of a key is pending, the tier must not answer for that key; and
    skipping it must not consume the half-open breaker's single probe."""
    cfg = CacheConfig(redis=RedisConfig(url=redis_url, breaker_threshold=1, breaker_reset=0.05),
                      l1_max_entries=0, news_poll_interval=60)
    with RagCache(cfg) as cache:
        assert cache.l3 is not None
        cache.store("q", "old")
        ref = cache.ref("q")
        cache._defer(cache.l3, lambda: None, ref.key)  # as if a newer write had failed
        assert cache.lookup("q") is None  # L3 still holds "old": not served
        breaker = cache.breakers["l3"]
        breaker.failure()
        time.sleep(0.06)  # half-open: one probe to hand out
        assert cache.lookup("q") is None
        assert breaker.allow(), "the skipped lookup took the probe"
        breaker.success()
        cache._replay_removals()
        assert not cache._replay and cache.lookup("q").value == "old"  # type: ignore[union-attr]
