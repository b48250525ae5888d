"""L3 faults under concurrent load: real servers killed, hung, restarted empty, and a
cluster primary crashed and failed over, while threads and asyncio tasks look up and
store through one ``RagCache``.

Required of every scenario: no exception reaches a caller; no wrong value (see
``tests/support/load.py`` for what counts as wrong and what as stale); each L3 read
that does I/O ends within the L3 deadline (plus scheduling slack on a busy machine);
once the breaker is open an L3 read costs well under a millisecond; L3 use resumes by
itself within seconds of the server coming back; and once the outage is over the
shared tier holds no version older than the newest one stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig
from rag_cache_plugin._localredis import LocalCluster, LocalRedis
from tests.support.load import L3Probe, Load, SchedulerLag, Truth, percentile, wait_for

TIMEOUT = 0.25
"""The L3 deadline of every call (RedisConfig.timeout)."""
RESET = 1.0
"""Seconds the L3 breaker stays open before a probe."""
SLACK = 0.35
"""Scheduling slack on top of the deadline: the machine has 2 cores shared with other
work and the load runs 4 threads plus an event loop, so a thread whose socket timed
out can wait this long for a core and the GIL before it returns."""
OPEN_COST_P99 = 0.0005
"""An L3 read short-circuited by the open breaker: well under a millisecond."""
RECOVERY = RESET + 3.0
"""L3 use must resume within this many seconds of the server being back."""
DOWN = 2.0
"""How long a killed or hung server stays away (the breaker opens well within it)."""
STABLE = 1.5
"""Load keeps running this long after L3 calls stopped failing, to show it stays up."""
KEYS = 600


def config(url: str) -> CacheConfig:
    # No L2 and a small L1: most lookups must go to L3, or there is nothing to test.
    return CacheConfig(l1_max_entries=64, news_poll_interval=0.2,
                       redis=RedisConfig(url=url, timeout=TIMEOUT, breaker_reset=RESET))


@dataclass
class Outcome:
    figures: dict[str, Any]
    errors: list[str]
    wrong: int
    io_max: float
    """Slowest L3 read, less the scheduling stall the machine imposed meanwhile."""
    open_calls: int
    open_p99: float
    recover: float | None
    ok_after: int
    l3_hits_after: int
    stale_after: int
    stale_in_l3: int


def run_fault(cache: RagCache, fault: Callable[[], None], *, contexts: int = 8) -> Outcome:
    """Load the cache, break L3 with ``fault`` (returns once the server is back),
    keep loading until L3 calls have stopped failing for ``STABLE`` seconds."""
    truth = Truth(KEYS, contexts)
    for i in range(KEYS):  # warm: every key has version 1 in L3
        ver = truth.begin(i)
        assert cache.store(truth.question(i), truth.value(i, ver), context=truth.context(i))
        truth.end(i, ver)
    probe = L3Probe(cache)
    lag = SchedulerLag().__enter__()
    load = Load(cache, truth).start()
    try:
        time.sleep(1.0)
        t_fault = time.perf_counter()
        fault()
        t_back = time.perf_counter()

        def settled() -> bool:
            after = probe.between(t_back)
            last_bad = max((c.start for c in after if c.failed or probe.short_circuited(c)),
                           default=t_back)
            return (any(c.io and not c.failed and c.start > last_bad for c in after)
                    and time.perf_counter() - last_bad >= STABLE)

        wait_for(settled, RECOVERY + STABLE + 10.0, step=0.05)
    finally:
        load.stop()
        lag.__exit__()
    t_end = time.perf_counter()

    after = probe.between(t_back)
    last_bad = max((c.start for c in after if c.failed or probe.short_circuited(c)),
                   default=None)
    first_ok = min((c.start for c in after if c.io and not c.failed
                    and (last_bad is None or c.start > last_bad)), default=None)
    recovered_at = first_ok if last_bad is None else (
        None if first_ok is None else max(last_bad, t_back))
    recover = None if recovered_at is None else recovered_at - t_back
    calls = probe.between(0)
    io = [c.seconds for c in calls if c.io]
    short = [c.seconds for c in calls if probe.short_circuited(c)]
    during = load.latencies(t_fault, t_back + (recover or 0.0))
    outcomes = load.outcomes()
    settled_from = (recovered_at or t_end) + 1.0
    l3_hits_after = sum(1 for t, _dt, o, tier in load.lookups
                        if t >= settled_from and tier == "l3" and o != "wrong")

    # Audit the shared tier once the outage is over and deferred repairs have run.
    wait_for(lambda: not cache._replay, 10.0)
    stale_in_l3 = 0
    assert cache.l3 is not None
    now = time.time()
    for i in range(KEYS):
        entry = cache.l3.get(cache.ref(truth.question(i), context=truth.context(i)), now)
        if entry is not None and truth.judge(i, truth.done[i], entry.value) != "current":
            stale_in_l3 += 1

    figures = {
        "ops": len(load.lookups) + len(load.stores), "lookups": len(load.lookups),
        "stores": len(load.stores), "exceptions": len(load.errors), **outcomes,
        "fault_s": t_back - t_fault,
        "p99_ms_during": percentile(during, 0.99) * 1e3,
        "max_ms_during": max(during, default=0.0) * 1e3,
        "p99_ms_all": percentile(load.latencies(), 0.99) * 1e3,
        "l3_io_calls": len(io), "l3_io_max_ms": max(io, default=0.0) * 1e3,
        "l3_io_max_ms_sync": max((c.seconds for c in calls if c.io and not c.aio),
                                 default=0.0) * 1e3,
        "l3_io_max_ms_async": max((c.seconds for c in calls if c.io and c.aio),
                                  default=0.0) * 1e3,
        "l3_io_slow": sum(1 for s in io if s > TIMEOUT + SLACK),
        "thread_lag_ms": lag.thread_lag * 1e3, "loop_lag_ms": lag.loop_lag * 1e3,
        "l3_open_calls": len(short), "l3_open_p99_us": percentile(short, 0.99) * 1e6,
        "l3_open_max_us": max(short, default=0.0) * 1e6,
        "recover_s": recover if recover is not None else "never",
        "stale_after": load.outcomes(settled_from)["stale"],
        "lookups_after": sum(load.outcomes(settled_from).values()),
        "l3_ok_after": sum(1 for c in after if c.io and not c.failed),
        "l3_hits_after": l3_hits_after, "stale_in_l3": stale_in_l3,
    }
    io_sync = max((c.seconds for c in calls if c.io and not c.aio), default=0.0)
    io_async = max((c.seconds for c in calls if c.io and c.aio), default=0.0)
    # The machine's own stalls (seen by a thread and a loop that run no cache code) are
    # added to the bound; the cache's time beyond its deadline is not excused.
    over = max(io_sync - lag.thread_lag, io_async - lag.loop_lag, 0.0)
    return Outcome(
        figures, load.errors, outcomes["wrong"], over, len(short),
        percentile(short, 0.99), recover,
        sum(1 for c in after if c.io and not c.failed), l3_hits_after,
        load.outcomes(settled_from)["stale"], stale_in_l3)


def check(out: Outcome, *, expect_open: bool) -> None:
    """The requirements shared by every scenario (each message carries the figures)."""
    f = out.figures
    assert out.errors == [], out.errors[:5]
    assert out.wrong == 0, f
    assert out.io_max <= TIMEOUT + SLACK, \
        f"an L3 read took {out.io_max:.3f}s beyond the machine's own stalls: {f}"
    if expect_open:
        assert out.open_calls > 0, f"the breaker never opened: {f}"
    assert out.open_p99 <= OPEN_COST_P99, f"open-breaker L3 cost p99 too high: {f}"
    assert out.recover is not None and out.recover <= RECOVERY, f
    assert out.ok_after > 0 and out.l3_hits_after > 0, f"L3 use did not resume: {f}"
    assert out.stale_after == 0, f
    assert out.stale_in_l3 == 0, f


@pytest.fixture
def server() -> Iterator[LocalRedis]:
    # A server of our own: the shared session server must stay healthy.
    with LocalRedis() as s:
        yield s


def _sigkill(server: LocalRedis) -> None:
    server.kill()
    time.sleep(DOWN)
    server.restart()  # empty, same port


def _sigstop(server: LocalRedis) -> None:
    server.pause()
    time.sleep(DOWN)
    server.resume()


def _restart_empty(server: LocalRedis) -> None:
    server.restart()  # graceful stop, start on the same port with no data


FAULTS: dict[str, tuple[Callable[[LocalRedis], None], bool]] = {
    "sigkill": (_sigkill, True),
    "sigstop-sigcont": (_sigstop, True),
    "restarted-empty": (_restart_empty, False),
}


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_standalone_fault_under_load(fault: str, server: LocalRedis,
                                     figures: Callable[..., str]) -> None:
    action, expect_open = FAULTS[fault]
    with RagCache(config(server.url)) as cache:
        out = run_fault(cache, lambda: action(server))
    figures(fault, **out.figures)
    check(out, expect_open=expect_open)


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    # Never crash the shared session cluster; node_timeout 1 s for a quick failover.
    with LocalCluster(3, 1, node_timeout_ms=1000) as cluster:
        yield cluster


@pytest.mark.redis
@pytest.mark.slow
def test_cluster_primary_segfault_and_failover_under_load(
        own_cluster: LocalCluster, figures: Callable[..., str]) -> None:
    with RagCache(config(own_cluster.url)) as cache:
        assert cache.l3 is not None and cache.l3.is_cluster
        truth = Truth(1, 24)
        victim = own_cluster.primary_for_key(
            cache.l3.data_key(cache.ref(truth.question(0), context=truth.context(0))))
        failover_s: list[float] = []

        def fault() -> None:
            t = time.perf_counter()
            own_cluster.crash(victim, how="segfault")
            own_cluster.wait_for_failover(victim, timeout=30)
            failover_s.append(time.perf_counter() - t)

        out = run_fault(cache, fault, contexts=24)
    figures("cluster-segfault", failover_s=failover_s[0], **out.figures)
    check(out, expect_open=False)


@pytest.mark.redis
async def test_cancelled_probe_does_not_wedge_the_breaker(
        server: LocalRedis, figures: Callable[..., str]) -> None:
    """An application timeout (``asyncio.wait_for``) that cancels the one probe a
    half-open breaker lets through must not leave the breaker waiting for it forever."""
    import asyncio

    # A slow news poll: its thread must not take the probe before the lookup does.
    cfg = CacheConfig(l1_max_entries=0, news_poll_interval=60,
                      redis=RedisConfig(url=server.url, timeout=TIMEOUT, breaker_reset=0.3))
    async with RagCache(cfg) as cache:
        await cache.astore("q", "v")
        breaker = cache.breakers["l3"]
        server.pause()
        try:
            while breaker.state != "open":
                assert await cache.alookup("q") is None
            await asyncio.sleep(0.35)  # past the reset: the next call is the probe
            cancelled = 0
            for _ in range(3):  # each wait_for cancels the probe mid-read
                try:
                    await asyncio.wait_for(cache.alookup("q"), timeout=0.05)
                except TimeoutError:
                    cancelled += 1
                await asyncio.sleep(0.35)
        finally:
            server.resume()
        t = time.perf_counter()
        hit = None
        while hit is None and time.perf_counter() - t < RECOVERY:
            hit = await cache.alookup("q")
            await asyncio.sleep(0.02)
        recover = time.perf_counter() - t
    figures("cancelled-probe", cancelled=cancelled, recover_s=recover,
            breaker=breaker.state, hit=hit is not None)
    assert cancelled >= 1, "no probe was cancelled: the test did not exercise the path"
    assert hit is not None and hit.tier == "l3", "L3 never came back after a cancelled probe"
    assert recover <= RECOVERY
