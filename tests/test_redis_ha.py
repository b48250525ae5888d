"""High availability of the L3 tier on real servers: a Redis Cluster primary and a
Sentinel-managed primary die under concurrent sync and asyncio load.  The cache must
raise nothing, return no wrong value, keep every call near its deadline, and serve
from Redis again a few seconds after the promotion."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from rag_cache_plugin import CacheConfig, EventBus, RagCache, RedisConfig, TierFailed
from rag_cache_plugin._localredis import LocalCluster, LocalSentinel
from rag_cache_plugin.redis_ops import RedisClusterManager

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT = 0.5  # the L3 deadline of these tests
KEYS = 240
CONTEXTS = 24  # partitions, hence hash slots spread over every primary


def expected(i: int) -> dict[str, Any]:
    return {"i": i, "answer": f"value-{i}", "sources": [i, i * 7 % 13]}


def q(i: int) -> tuple[str, str]:
    return f"question number {i}", f"context {i % CONTEXTS}"


@dataclass
class Load:
    """Threads and asyncio tasks looking up and storing known key -> value pairs."""

    cache: RagCache
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    hits: int = 0
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, i: int, hit: Any, took: float) -> None:
        with self.lock:
            self.calls += 1
            self.latencies.append(took)
            if hit is not None:
                self.hits += 1
                if hit.value != expected(i):
                    self.wrong.append(f"key {i}: {hit.value!r}")

    def sync_worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            i = rng.randrange(KEYS)
            question, ctx = q(i)
            try:
                t = time.perf_counter()
                if rng.random() < 0.2:
                    self.cache.store(question, expected(i), context=ctx)
                    self.check(i, None, time.perf_counter() - t)
                else:
                    hit = self.cache.lookup(question, context=ctx)
                    self.check(i, hit, time.perf_counter() - t)
            except Exception as exc:  # the property under test: never happens
                self.errors.append(f"sync: {type(exc).__name__}: {exc}")

    async def async_worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            try:
                r = rng.random()
                if r < 0.15:
                    i = rng.randrange(KEYS)
                    t = time.perf_counter()
                    await self.cache.astore(q(i)[0], expected(i), context=q(i)[1])
                    self.check(i, None, time.perf_counter() - t)
                elif r < 0.3:
                    ctx = rng.randrange(CONTEXTS)
                    ids = [i for i in range(ctx, KEYS, CONTEXTS)][:8]
                    t = time.perf_counter()
                    hits = await self.cache.alookup_many([q(i)[0] for i in ids],
                                                         context=f"context {ctx}")
                    took = time.perf_counter() - t
                    for i, hit in zip(ids, hits, strict=True):
                        self.check(i, hit, took)
                else:
                    i = rng.randrange(KEYS)
                    t = time.perf_counter()
                    hit = await self.cache.alookup(q(i)[0], context=q(i)[1])
                    self.check(i, hit, time.perf_counter() - t)
            except Exception as exc:
                self.errors.append(f"async: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0)

    def async_thread(self) -> None:
        async def main() -> None:
            await asyncio.gather(*(self.async_worker(100 + k) for k in range(6)))
            await self.cache.l3.aclose()  # type: ignore[union-attr]
        asyncio.run(main())

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.sync_worker, args=(k,)) for k in range(3)]
        self.threads.append(threading.Thread(target=self.async_thread))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def l3_cache(redis: RedisConfig, bus: EventBus) -> RagCache:
    # L1 off and no L2: every lookup goes to Redis.
    return RagCache(CacheConfig(l1_max_entries=0, redis=redis, news_poll_interval=0.5),
                    bus=bus)


def failures_after(events: list[TierFailed], since: float) -> list[float]:
    return [t for t, _ in events if t > since]  # type: ignore[misc]


def wait_for(cond: Callable[[], bool], timeout: float) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return time.monotonic()
        time.sleep(0.05)
    return None


def assert_healthy_run(load: Load) -> None:
    assert load.errors == []
    assert load.wrong == []
    assert load.calls > 200 and load.hits > 100
    # A call returns near its deadline however the failover goes: one attempt of
    # TIMEOUT, plus at most one fast-failed attempt before it (< TIMEOUT / 2), plus
    # slack for this shared 2-core machine.
    assert max(load.latencies) < 2 * TIMEOUT + 1.0, max(load.latencies)


def test_cluster_primary_failover_under_load() -> None:
    with LocalCluster(3, 1, node_timeout_ms=1500) as cluster:
        bus, failed = EventBus(), []
        bus.subscribe(lambda e: failed.append((time.monotonic(), e)), (TierFailed,))
        manager = RedisClusterManager(cluster.url, timeout=0.5)
        manager.initialize_cluster()
        cache = l3_cache(RedisConfig(url=cluster.url, timeout=TIMEOUT, breaker_reset=0.5), bus)
        with cache:
            for i in range(KEYS):
                assert cache.store(*q(i)[:1], expected(i), context=q(i)[1])
            victim_key = cache.l3.data_key(cache.ref(*q(0)[:1], context=q(0)[1]))  # type: ignore[union-attr]
            victim = cluster.primary_for_key(victim_key)
            for node in cluster.primaries:  # replicas hold everything stored so far
                node.client().execute_command("WAIT", 1, 2000)
            with Load(cache) as load:
                time.sleep(1.5)
                crashed_at = time.monotonic()
                cluster.crash(victim)
                down = manager.monitor_cluster()
                assert down.node(f"{victim.host}:{victim.port}").status == "down"
                assert down.status == "degraded"
                heir = cluster.wait_for_failover(victim, timeout=30)
                promoted_at = time.monotonic()
                # The health report names the promoted replica.
                report = manager.monitor_cluster()
                assert f"{heir.host}:{heir.port}" in report.promoted
                assert report.node(f"{heir.host}:{heir.port}").role == "primary"
                # Redis serves the failed-over slot again, from the cache's own client.
                back = wait_for(lambda: (h := cache.lookup(*q(0)[:1], context=q(0)[1]))
                                is not None and h.tier == "l3", 10)
                assert back is not None, "L3 did not serve the failed-over slot again"
                time.sleep(2.0)
            assert_healthy_run(load)
            late = [t for t, _ in failed if t > promoted_at + 3.0]
            assert late == [], f"{len(late)} L3 failures more than 3 s after the promotion"
            print(f"\nfailover: {len(failed)} L3 failures, promotion after "
                  f"{promoted_at - crashed_at:.1f}s, L3 back {back - promoted_at:.1f}s later, "
                  f"{load.calls} calls, max {max(load.latencies) * 1000:.0f} ms")


def test_sentinel_failover_under_load() -> None:
    with LocalSentinel(replicas=1, sentinels=3, down_after_ms=1000) as sentinel:
        addresses = [f"{h}:{p}" for h, p in sentinel.sentinel_addresses]
        config = RedisConfig(sentinels=addresses, sentinel_service=sentinel.master_name,
                             timeout=TIMEOUT, breaker_reset=0.5)
        manager = RedisClusterManager(config, timeout=0.5)
        topo = manager.initialize_cluster()
        assert topo.mode == "sentinel"
        assert [n.port for n in topo.primaries] == [sentinel.primary.port]  # type: ignore[union-attr]
        bus, failed = EventBus(), []
        bus.subscribe(lambda e: failed.append((time.monotonic(), e)), (TierFailed,))
        cache = l3_cache(config, bus)
        with cache:
            for i in range(KEYS):
                assert cache.store(*q(i)[:1], expected(i), context=q(i)[1])
            assert cache.l3.mode == "sentinel"  # type: ignore[union-attr]
            sentinel.primary.client().execute_command("WAIT", 1, 2000)  # type: ignore[union-attr]
            with Load(cache) as load:
                time.sleep(1.5)
                old = sentinel.primary
                new = sentinel.failover(timeout=30)
                promoted_at = time.monotonic()
                back = wait_for(lambda: (h := cache.lookup(*q(1)[:1], context=q(1)[1]))
                                is not None and h.tier == "l3", 10)
                assert back is not None, "L3 did not follow the new primary"
                report = manager.monitor_cluster()
                assert f"{new.host}:{new.port}" in report.promoted
                assert report.node(f"{new.host}:{new.port}").role == "primary"
                assert old is not None and new.port != old.port
                time.sleep(2.0)
            assert_healthy_run(load)
            late = [t for t, _ in failed if t > promoted_at + 3.0]
            assert late == [], f"{len(late)} L3 failures more than 3 s after the promotion"


def test_cluster_down_fails_fast_sync_and_async() -> None:
    """``CLUSTERDOWN`` costs a round trip, not redis-py's 250 ms sleep and reconnect."""
    from rag_cache_plugin._codec import Codec
    from rag_cache_plugin._errors import TierError
    from rag_cache_plugin._keys import KeyMaker
    from rag_cache_plugin._tiers import Ref
    from rag_cache_plugin._tiers.redis import RedisTier

    with LocalCluster(3, 0, node_timeout_ms=500) as cluster:
        tier = RedisTier(RedisConfig(url=cluster.url, timeout=1.0), codec=Codec(),
                         keys=KeyMaker())
        refs = [Ref(f"k{i}", "ns", f"p{i}") for i in range(30)]
        assert tier.get_many(refs, time.time()) == {}  # client and map ready
        victim = cluster.primaries[0]
        cluster.crash(victim)
        survivor = cluster.primaries[1]

        def says_down() -> bool:
            try:
                survivor.client().get("x")
            except Exception as exc:
                return "CLUSTERDOWN" in str(exc) or "cluster is down" in str(exc)
            return False

        assert wait_for(says_down, 20) is not None
        took = []
        for ref in refs[:10]:
            t = time.perf_counter()
            with pytest.raises(TierError):
                tier.get(ref, time.time())
            took.append(time.perf_counter() - t)

        async def async_calls() -> list[float]:
            out = []
            for ref in refs[:10]:
                t = time.perf_counter()
                with pytest.raises(TierError):
                    await tier.aget(ref, time.time())
                out.append(time.perf_counter() - t)
            await tier.aclose()
            return out

        atook = asyncio.run(async_calls())
        tier.close()
        # Each call: up to three fast attempts (one may reconnect); redis-py's own
        # handling would sleep 250 ms per attempt.
        assert sorted(took)[len(took) // 2] < 0.2, took
        assert sorted(atook)[len(atook) // 2] < 0.2, atook


def test_hung_primary_costs_one_deadline_not_one_per_retry() -> None:
    """A primary that accepts connections and never answers (SIGSTOP): each call gives
    up after its deadline; retries and the map refresh do not multiply it."""
    from rag_cache_plugin._codec import Codec
    from rag_cache_plugin._errors import TierError
    from rag_cache_plugin._keys import KeyMaker
    from rag_cache_plugin._tiers import Ref
    from rag_cache_plugin._tiers.redis import RedisTier

    deadline = 0.3
    with LocalCluster(3, 0, node_timeout_ms=60_000) as cluster:
        tier = RedisTier(RedisConfig(url=cluster.url, timeout=deadline, connect_timeout=deadline),
                         codec=Codec(), keys=KeyMaker())
        refs = [Ref(f"k{i}", "ns", f"p{i}") for i in range(40)]
        victim = cluster.primaries[0]
        stuck = [r for r in refs if cluster.primary_for_key(tier.data_key(r)) is victim][:4]
        assert stuck
        tier.get_many(refs[:1], time.time())
        cluster.pause(victim)
        try:
            took = []
            for ref in stuck:
                t = time.perf_counter()
                with pytest.raises(TierError):
                    tier.get(ref, time.time())
                took.append(time.perf_counter() - t)

            async def async_calls() -> list[float]:
                out = []
                for ref in stuck:
                    t = time.perf_counter()
                    with pytest.raises(TierError):
                        await tier.aget(ref, time.time())
                    out.append(time.perf_counter() - t)
                await tier.aclose()
                return out

            atook = asyncio.run(async_calls())
        finally:
            cluster.resume(victim)
            tier.close()
        print(f"\nhung primary, deadline {deadline}s: sync calls {max(took):.3f}s max, "
              f"async {max(atook):.3f}s max")
        # One deadline each (plus slack for this busy machine), never three.
        assert max(took) < 2 * deadline + 0.3, took
        assert max(atook) < deadline + 0.3, atook
