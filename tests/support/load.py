"""Concurrent load with a ground truth, for fault tests.

Threads and asyncio tasks (on a loop in a thread of its own) look up and store
entries in one ``RagCache`` while a test breaks a server under them.  Every value
a lookup returns is judged against what was stored for its key:

- each key has one writer, which stores versions 1, 2, 3, ... of a value that is a
  pure function of (key, version) and carries a checksum;
- **wrong**: anything that is not a version stored for *that* key (another key's
  value, a mangled value, a version never stored).  A fault must never cause one.
- **stale**: a version older than the newest one whose ``store`` had returned before
  the lookup began.  A shared tier that was unreachable while a newer version was
  stored can legitimately serve it until the outage is over; stale values are
  counted and printed, and a test may bound them.
- **current**: everything else (including a version being stored concurrently).

``L3Probe`` times every L3 read the core makes and tells the ones that did I/O from
the ones the circuit breaker short-circuited, and which of them failed.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag_cache_plugin import RagCache

Lookup = tuple[float, float, str, str]
"""(start, seconds, outcome, tier): outcome is miss, current, stale or wrong."""


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Truth:
    """What was stored for each of ``n`` keys, and in which versions."""

    def __init__(self, n: int, contexts: int = 1) -> None:
        self.n = n
        self.contexts = contexts
        self.lock = threading.Lock()
        self.started: list[set[int]] = [set() for _ in range(n)]
        self.done = [0] * n
        self.next = [0] * n

    def question(self, i: int) -> str:
        return f"What does fault-test document {i} say about topic {i * 7 % 13}?"

    def context(self, i: int) -> str:
        # Several contexts spread the keys over partitions, hence over cluster slots.
        return f"system: answer from corpus {i % self.contexts}"

    @staticmethod
    def _check(i: int, ver: int) -> str:
        return hashlib.blake2b(f"{i}:{ver}".encode(), digest_size=8).hexdigest()

    def value(self, i: int, ver: int) -> dict[str, Any]:
        return {"i": i, "ver": ver, "check": self._check(i, ver),
                "answer": f"answer to {i}, version {ver}", "sources": [i, ver]}

    def begin(self, i: int) -> int:
        with self.lock:
            self.next[i] += 1
            ver = self.next[i]
            self.started[i].add(ver)
        return ver

    def end(self, i: int, ver: int) -> None:
        with self.lock:
            self.done[i] = max(self.done[i], ver)

    def judge(self, i: int, floor: int, value: Any) -> str:
        """current, stale or wrong (see the module docstring)."""
        if not isinstance(value, dict) or value.get("i") != i:
            return "wrong"
        ver = value.get("ver")
        if not isinstance(ver, int) or value != self.value(i, ver):
            return "wrong"
        with self.lock:
            if ver not in self.started[i]:
                return "wrong"
        return "stale" if ver < floor else "current"


@dataclass
class L3Call:
    start: float
    seconds: float
    io: bool
    """False: the breaker short-circuited the call (no network at all)."""
    failed: bool
    aio: bool = False
    """Made by an asyncio task (``alookup``), not a thread."""
    pending: bool = False
    """Skipped without I/O because a repair of that key is pending (not the breaker)."""


class L3Probe:
    """Times the core's L3 reads (sync and async) on one cache instance."""

    def __init__(self, cache: RagCache) -> None:
        assert cache.l3 is not None
        self.calls: list[L3Call] = []
        flags: contextvars.ContextVar[list[bool]] = contextvars.ContextVar("l3probe")
        l3 = cache.l3
        tier_get, atier_get, failed = cache._tier_get, cache._atier_get, cache._failed
        get, aget = l3.get, l3.aget

        def mark() -> None:
            f = flags.get(None)
            if f is not None:  # None: a direct tier call, not through the core
                f[0] = True

        def probe_get(ref: Any, now: float) -> Any:
            mark()
            return get(ref, now)

        async def probe_aget(ref: Any, now: float) -> Any:
            mark()
            return await aget(ref, now)

        def probe_failed(tier: Any, *args: Any) -> None:
            f = flags.get(None)
            if f is not None and tier is l3:
                f[1] = True
            failed(tier, *args)

        def timed_get(tier: Any, ref: Any, now: float) -> Any:
            if tier is not l3:
                return tier_get(tier, ref, now)
            f = [False, False]
            pending = cache._repair_pending(tier, ref.key)
            token = flags.set(f)
            t = time.perf_counter()
            try:
                return tier_get(tier, ref, now)
            finally:
                self.calls.append(L3Call(t, time.perf_counter() - t, f[0], f[1], False, pending))
                flags.reset(token)

        async def atimed_get(tier: Any, ref: Any, now: float) -> Any:
            if tier is not l3:
                return await atier_get(tier, ref, now)
            f = [False, False]
            pending = cache._repair_pending(tier, ref.key)
            token = flags.set(f)
            t = time.perf_counter()
            try:
                return await atier_get(tier, ref, now)
            finally:
                self.calls.append(L3Call(t, time.perf_counter() - t, f[0], f[1], True, pending))
                flags.reset(token)

        l3.get, l3.aget = probe_get, probe_aget  # type: ignore[method-assign]
        cache._tier_get = timed_get  # type: ignore[method-assign]
        cache._atier_get = atimed_get  # type: ignore[method-assign]
        cache._failed = probe_failed  # type: ignore[method-assign,assignment]

    def between(self, start: float, end: float = float("inf")) -> list[L3Call]:
        return [c for c in list(self.calls) if start <= c.start < end]

    @staticmethod
    def short_circuited(c: L3Call) -> bool:
        """Refused by the breaker (no I/O, no repair pending)."""
        return not c.io and not c.pending


@dataclass
class Load:
    """Threads and asyncio tasks looking up and storing against one cache."""

    cache: RagCache
    truth: Truth
    threads: int = 4
    tasks: int = 16
    write_share: float = 0.2
    pause: float = 0.002
    """Seconds between two operations of one worker: keeps the load from starving
    the test's own thread on a small machine."""
    lookups: list[Lookup] = field(default_factory=list)
    stores: list[tuple[float, float, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    @property
    def writers(self) -> int:
        return self.threads + self.tasks

    # -- one operation ------------------------------------------------------------

    def _pick(self, rng: random.Random, w: int) -> tuple[int, bool]:
        if rng.random() < self.write_share:
            return rng.randrange(w, self.truth.n, self.writers), True  # a key this worker owns
        return rng.randrange(self.truth.n), False

    def _judge(self, i: int, floor: int, t: float, hit: Any) -> None:
        dt = time.perf_counter() - t
        if hit is None:
            self.lookups.append((t, dt, "miss", ""))
        else:
            self.lookups.append((t, dt, self.truth.judge(i, floor, hit.value), hit.tier))

    def _sync_op(self, rng: random.Random, w: int) -> None:
        i, write = self._pick(rng, w)
        tr, c = self.truth, self.cache
        t = time.perf_counter()
        if write:
            ver = tr.begin(i)
            ok = c.store(tr.question(i), tr.value(i, ver), context=tr.context(i))
            tr.end(i, ver)
            self.stores.append((t, time.perf_counter() - t, ok))
        else:
            floor = tr.done[i]
            self._judge(i, floor, t, c.lookup(tr.question(i), context=tr.context(i)))

    async def _async_op(self, rng: random.Random, w: int) -> None:
        i, write = self._pick(rng, w)
        tr, c = self.truth, self.cache
        t = time.perf_counter()
        if write:
            ver = tr.begin(i)
            ok = await c.astore(tr.question(i), tr.value(i, ver), context=tr.context(i))
            tr.end(i, ver)
            self.stores.append((t, time.perf_counter() - t, ok))
        else:
            floor = tr.done[i]
            self._judge(i, floor, t, await c.alookup(tr.question(i), context=tr.context(i)))

    # -- workers ------------------------------------------------------------------

    def _thread(self, w: int) -> None:
        rng = random.Random(w)
        while not self._stop.is_set():
            try:
                self._sync_op(rng, w)
            except Exception as exc:  # counted: the requirement is that there are none
                self.errors.append(f"thread {w}: {type(exc).__name__}: {exc}")
            time.sleep(self.pause)

    async def _task(self, w: int) -> None:
        rng = random.Random(1000 + w)
        while not self._stop.is_set():
            try:
                await self._async_op(rng, w)
            except Exception as exc:
                self.errors.append(f"task {w}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(self.pause)

    def _loop(self) -> None:
        async def main() -> None:
            await asyncio.gather(*(self._task(self.threads + k) for k in range(self.tasks)))
            # Close this loop's async L3 client; the cache itself stays open.
            l3 = self.cache.l3
            client = l3._async.pop(asyncio.get_running_loop(), None) if l3 else None
            if client is not None:
                await client.aclose()

        asyncio.run(main())

    def start(self) -> Load:
        for w in range(self.threads):
            self._workers.append(threading.Thread(target=self._thread, args=(w,), daemon=True))
        if self.tasks:
            self._workers.append(threading.Thread(target=self._loop, daemon=True))
        for th in self._workers:
            th.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._workers:
            th.join(timeout=30)
        assert not any(th.is_alive() for th in self._workers), "a load worker hung"

    # -- figures ------------------------------------------------------------------

    def outcomes(self, start: float = 0.0, end: float = float("inf")) -> dict[str, int]:
        out = {"miss": 0, "current": 0, "stale": 0, "wrong": 0}
        for t, _dt, outcome, _tier in list(self.lookups):
            if start <= t < end:
                out[outcome] += 1
        return out

    def latencies(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        return [dt for t, dt, _o, _tier in list(self.lookups) if start <= t < end]


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


class SchedulerLag:
    """How late this machine wakes a sleeping thread and a sleeping asyncio task, measured
    on a thread and an event loop of their own that run no cache code: a deadline check
    may excuse the machine's scheduling stalls, never the cache blocking its own loop."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.thread_lag = 0.0
        self.loop_lag = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sleeper, daemon=True),
                         threading.Thread(target=lambda: asyncio.run(self._aloop()), daemon=True)]

    def _sleeper(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(self.period)
            self.thread_lag = max(self.thread_lag, time.perf_counter() - t - self.period)

    async def _aloop(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(self.period)
            self.loop_lag = max(self.loop_lag, time.perf_counter() - t - self.period)

    def __enter__(self) -> SchedulerLag:
        for th in self._threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=5)
