"""Single-flight lookups: concurrent identical misses compute once, within a process
(threads and tasks) and across processes sharing Redis; leaders that fail let go."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from rag_cache_plugin import CacheConfig, Hit, Miss, RagCache, RedisConfig


@pytest.fixture
def cache() -> Iterator[RagCache]:
    with RagCache(CacheConfig(single_flight_timeout=5.0)) as c:
        yield c


def test_off_by_default(cache: RagCache) -> None:
    assert cache.lookup("q") is None
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(cache.lookup("q")))
    t.start()
    t.join(1.0)
    assert not t.is_alive() and out == [None]  # no waiting without single_flight
    assert len(cache.flights) == 0


def test_threads_wait_for_the_leader(cache: RagCache) -> None:
    computed = []
    lock = threading.Lock()

    def ask() -> object:
        hit = cache.lookup("What is up?", single_flight=True)
        if hit is None:
            with lock:
                computed.append(1)
            time.sleep(0.3)  # the model call
            cache.store("What is up?", "the sky")
            return "the sky"
        return hit.value

    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(ask())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == ["the sky"] * 8
    assert len(computed) == 1
    assert len(cache.flights) == 0


def test_leader_never_waits_on_itself(cache: RagCache) -> None:
    assert cache.lookup("q", single_flight=True) is None
    started = time.monotonic()
    assert cache.lookup("q", single_flight=True) is None  # same thread: leads again
    assert time.monotonic() - started < 0.5


def test_events_count_one_lookup_each(cache: RagCache) -> None:
    events: list[object] = []
    cache.bus.subscribe(events.append, (Hit, Miss))
    assert cache.lookup("q", single_flight=True) is None
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(cache.lookup("q", single_flight=True)))
    t.start()
    time.sleep(0.1)
    cache.store("q", "a")
    t.join(2)
    assert [type(e) for e in events] == [Miss, Hit]  # the follower's wait is one hit


def test_release_lets_a_follower_lead(cache: RagCache) -> None:
    assert cache.lookup("q", single_flight=True) is None  # main thread leads
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(cache.lookup("q", single_flight=True)))
    t.start()
    time.sleep(0.1)
    assert t.is_alive()  # waiting
    started = time.monotonic()
    cache.release("q")  # the model call failed
    t.join(2)
    assert got == [None] and time.monotonic() - started < 1.0  # it leads now
    assert len(cache.flights) == 1
    cache.store("q", "a")
    assert len(cache.flights) == 0


def test_refused_store_releases(cache: RagCache) -> None:
    with RagCache(CacheConfig(max_entry_bytes=64, single_flight_timeout=5.0)) as c:
        assert c.lookup("q", single_flight=True) is None
        assert c.store("q", "x" * 1000) is False
        assert len(c.flights) == 0


def test_silent_leader_times_out() -> None:
    with RagCache(CacheConfig(single_flight_timeout=0.3)) as c:
        assert c.lookup("q", single_flight=True) is None  # leads, never stores
        got: list[object] = []
        started = time.monotonic()
        t = threading.Thread(target=lambda: got.append(c.lookup("q", single_flight=True)))
        t.start()
        t.join(3)
        waited = time.monotonic() - started
        assert got == [None] and 0.2 < waited < 2.0


async def test_tasks_wait_for_the_leader(cache: RagCache) -> None:
    calls = 0

    async def ask() -> object:
        nonlocal calls
        hit = await cache.alookup("q", context="ctx", single_flight=True)
        if hit is not None:
            return hit.value
        calls += 1
        await asyncio.sleep(0.2)
        await cache.astore("q", "answer", context="ctx")
        return "answer"

    results = await asyncio.gather(*(ask() for _ in range(50)))
    assert results == ["answer"] * 50
    assert calls == 1


async def test_a_failed_leading_task_lets_go(cache: RagCache) -> None:
    async def leader() -> None:
        assert await cache.alookup("q", single_flight=True) is None
        await asyncio.sleep(0.1)
        raise RuntimeError("model failed")  # never stores

    task = asyncio.ensure_future(leader())
    await asyncio.sleep(0.01)
    started = time.monotonic()
    follower = asyncio.ensure_future(cache.alookup("q", single_flight=True))
    with pytest.raises(RuntimeError):
        await task
    assert await asyncio.wait_for(follower, 2) is None  # it leads now, long before 5 s
    assert time.monotonic() - started < 1.0


async def test_sync_lookup_inside_the_leaders_loop_does_not_block(cache: RagCache) -> None:
    async def lead() -> None:
        assert await cache.alookup("q", single_flight=True) is None
        await asyncio.sleep(0.5)

    task = asyncio.ensure_future(lead())
    await asyncio.sleep(0.01)
    started = time.monotonic()
    assert cache.lookup("q", single_flight=True) is None  # would deadlock if it waited
    assert time.monotonic() - started < 0.2
    await task


@pytest.mark.redis
@pytest.mark.parametrize("server", ["redis_url", "cluster_url"])
def test_followers_in_another_process_wait_on_the_redis_lock(
        server: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(server)
    cfg = CacheConfig(redis=RedisConfig(url=url), single_flight_timeout=5.0)
    with RagCache(cfg) as a, RagCache(cfg) as b:  # two "processes": separate L1s
        assert a.lookup("q", single_flight=True) is None  # a leads, takes the lock
        got: list[object] = []
        t = threading.Thread(target=lambda: got.append(b.lookup("q", single_flight=True)))
        t.start()
        time.sleep(0.2)
        assert t.is_alive()
        a.store("q", "from a")
        t.join(3)
        assert len(got) == 1 and got[0] is not None
        assert got[0].value == "from a" and got[0].tier == "l3"  # type: ignore[attr-defined]


@pytest.mark.redis
async def test_remote_lock_released_on_release(redis_url: str) -> None:
    cfg = CacheConfig(redis=RedisConfig(url=redis_url), single_flight_timeout=5.0)
    async with RagCache(cfg) as a, RagCache(cfg) as b:
        assert await a.alookup("q", single_flight=True) is None
        follower = asyncio.ensure_future(b.alookup("q", single_flight=True))
        await asyncio.sleep(0.2)
        assert not follower.done()
        started = time.monotonic()
        await a.arelease("q")
        assert await asyncio.wait_for(follower, 3) is None  # b leads now
        assert time.monotonic() - started < 1.0
        await b.astore("q", "from b")
        assert (await a.alookup("q")).value == "from b"  # type: ignore[union-attr]
