"""Redis going away and coming back, seen through RagCache (standalone server of
its own, so the shared fixtures stay healthy)."""

from __future__ import annotations

import time
from pathlib import Path

from rag_cache_plugin import CacheConfig, EventBus, RagCache, RedisConfig, TierFailed
from rag_cache_plugin._localredis import LocalRedis


def wait_until(cond: object, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_redis_stopped_mid_run(tmp_path: Path) -> None:
    bus, failures = EventBus(), []
    bus.subscribe(failures.append, (TierFailed,))
    with LocalRedis() as server:
        cfg = CacheConfig(sqlite_path=tmp_path / "c.db",
                          redis=RedisConfig(url=server.url, timeout=0.2, breaker_reset=0.5))
        with RagCache(cfg, bus=bus) as cache:
            for i in range(20):
                cache.store(f"q{i}", i)
            server.kill()
            # Served from L1 and L2; L3 failures are events, never exceptions.
            for i in range(20):
                assert cache.lookup(f"q{i}").value == i  # type: ignore[union-attr]
            cache.l1.clear()
            for i in range(20):
                assert cache.lookup(f"q{i}").value == i  # type: ignore[union-attr]
            assert cache.store("during", "outage") is True
            for i in range(10):  # misses reach L3 and trip its breaker
                assert cache.lookup(f"nothing {i}") is None
            assert any(f.tier == "l3" for f in failures)
            # The breaker opens after `breaker_threshold` consecutive failures; how many
            # the test's own calls and the news thread have made so far depends on timing.
            assert wait_until(lambda: cache.lookup("nothing") is None
                              and cache.breakers["l3"].state == "open")
            server.restart()  # empty, same port
            # L3 use resumes by itself once the breaker lets a probe through.
            assert wait_until(lambda: cache.lookup("absent") is None
                              and cache.breakers["l3"].state == "closed")
            cache.store("after", "recovery")
            assert server.client().exists(cache.l3.data_key(cache.ref("after")))  # type: ignore[union-attr]


def test_invalidation_during_outage_is_replayed(tmp_path: Path) -> None:
    with LocalRedis() as server:
        cfg = CacheConfig(redis=RedisConfig(url=server.url, timeout=0.2, breaker_reset=0.3),
                          news_poll_interval=0.05)
        with RagCache(cfg) as cache:
            cache.store("q", "stale", tags=["doc"])
            name = cache.l3.data_key(cache.ref("q"))  # type: ignore[union-attr]
            server.pause()
            assert cache.invalidate(tags=["doc"]) == 1  # L1 only while L3 hangs
            assert cache.lookup("q") is None
            server.resume()
            # The failed L3 removal is retried: the stale value never comes back.
            assert wait_until(lambda: not server.client().exists(name))
            cache.l1.clear()
            assert cache.lookup("q") is None
