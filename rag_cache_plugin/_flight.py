"""Single-flight: concurrent identical misses compute the answer once.

The first caller that misses a key becomes its leader and computes the answer;
callers of the same key from other threads or tasks wait (bounded by a timeout)
for the leader's ``store`` and then read the entry.  The leader's own repeated
lookups never wait on itself.  A leader that never stores releases the key
explicitly (``RagCache.release``), when its asyncio task ends, or when its lease
(the timeout) runs out, whichever comes first.

With L3 configured the leader also takes a short Redis lock (``SET NX PX``) so
that followers in other processes and hosts poll for the leader's entry instead
of calling the model again.  Any Redis trouble means "no lock": the caller leads.

Background work (warming) uses a table of its own (another lock suffix) and
``atry_lead``, which never waits: a key someone else computes is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._tiers import Ref

if TYPE_CHECKING:
    from ._core import CacheHit, RagCache
    from ._tiers.redis import RedisTier

__all__ = ["FlightTable"]

_SWEEP_AT = 1024  # sweep expired flights once the table holds this many
_POLL_FIRST = 0.01  # seconds between polls of a peer's Redis lock, growing ...
_POLL_MAX = 0.1  # ... up to this
# Compare-and-delete: only the holder's token removes the lock.
_UNLOCK = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
    "return 0"
)


def _owner() -> object:
    """Who is asking: the running asyncio task, else the thread."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return task if task is not None else threading.get_ident()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Flight:
    """One key being computed by its leader."""

    __slots__ = ("done", "event", "expires", "key", "owner", "ref", "token", "waiters")

    def __init__(self, ref: Ref, owner: object, expires: float) -> None:
        self.key = ref.key
        self.ref = ref
        self.owner = owner
        self.expires = expires
        self.done = False
        self.event = threading.Event()
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.token: str | None = None  # the Redis lock's token while this leader holds it

    def finish(self) -> None:
        """Wake every waiter, sync and async (from any thread)."""
        self.done = True
        self.event.set()
        waiters, self.waiters = self.waiters, []
        for loop, fut in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)


class FlightTable:
    """The flights of one ``RagCache``; ``follow`` runs on a miss, ``landed`` after a
    store, ``release`` when a leader gives up."""

    def __init__(self, cache: RagCache, timeout: float,
                 clock: Callable[[], float] = time.monotonic, *,
                 lock_suffix: str = ":lock") -> None:
        self._cache = cache
        self.timeout = timeout
        self._clock = clock
        self.lock_suffix = lock_suffix
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()  # pending unlocks (keep them referenced)

    def __len__(self) -> int:
        return len(self._flights)

    # -- the table ------------------------------------------------------------------

    def _claim(self, ref: Ref, owner: object) -> tuple[_Flight, bool]:
        """(flight, True) when ``owner`` leads ``ref`` now, else (the live flight, False)."""
        now = self._clock()
        stale: _Flight | None = None
        with self._lock:
            f = self._flights.get(ref.key)
            if f is not None:
                if f.owner == owner:
                    f.expires = now + self.timeout  # the leader asks again: renew, never wait
                    return f, True
                if f.expires > now:
                    return f, False
                stale = f  # its leader gave up silently; take over and wake its waiters
            elif len(self._flights) >= _SWEEP_AT:
                self._sweep(now)
            f = self._flights[ref.key] = _Flight(ref, owner, now + self.timeout)
        if stale is not None:
            stale.finish()
        if isinstance(owner, asyncio.Task):
            flight = f

            def ended(_task: asyncio.Task[Any]) -> None:
                self._abandoned(flight)

            owner.add_done_callback(ended)
        return f, True

    def _sweep(self, now: float) -> None:
        for key in [k for k, f in self._flights.items() if f.expires <= now]:
            self._flights.pop(key).finish()

    def _end(self, key: str, flight: _Flight | None = None) -> _Flight | None:
        with self._lock:
            f = self._flights.get(key)
            if f is None or (flight is not None and f is not flight):
                return None
            del self._flights[key]
        f.finish()
        return f

    def _abandoned(self, flight: _Flight) -> None:
        """The leading task ended; if it stored, the flight is gone already."""
        f = self._end(flight.key, flight)
        if f is not None and f.token is not None:
            task = asyncio.get_running_loop().create_task(self._aunlock(f))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def landed(self, ref: Ref) -> None:
        """An entry for ``ref`` was stored (or refused): its flight ends."""
        f = self._end(ref.key) if self._flights else None
        if f is not None and f.token is not None:
            self._unlock(f)

    async def alanded(self, ref: Ref) -> None:
        f = self._end(ref.key) if self._flights else None
        if f is not None and f.token is not None:
            await self._aunlock(f)

    release = landed
    arelease = alanded

    # -- sync -----------------------------------------------------------------------

    def follow(self, ref: Ref, question: str, started: float) -> CacheHit | None:
        """On a miss: wait for another caller's answer, or return None to lead."""
        deadline = self._clock() + self.timeout
        owner = _owner()
        while True:
            f, leading = self._claim(ref, owner)
            if leading:
                return self._lead(f, question, started, deadline)
            if not self._wait(f, deadline):
                return None
            hit = self._recheck(ref, question, started)
            if hit is not None or self._clock() >= deadline:
                return hit

    def _wait(self, f: _Flight, deadline: float) -> bool:
        owner = f.owner
        if isinstance(owner, asyncio.Task) and not owner.done():
            try:
                if owner.get_loop() is asyncio.get_running_loop():
                    return False  # blocking here would stall the leader itself
            except RuntimeError:
                pass
        left = min(deadline, f.expires) - self._clock()
        if left > 0:
            f.event.wait(left)
        return True

    def _recheck(self, ref: Ref, question: str, started: float) -> CacheHit | None:
        c = self._cache
        now = c._clock()
        entry = c.l1.get(ref, now)
        if entry is not None:
            return c._hit(entry, "l1", "exact", 1.0, None, started, question)
        for tier in c.lower:
            entry = c._tier_get(tier, ref, now)
            if entry is not None:
                c._promote(entry, tier.name, now)
                return c._hit(entry, tier.name, "exact", 1.0, None, started, question)
        return None

    def _lead(self, f: _Flight, question: str, started: float,
              deadline: float) -> CacheHit | None:
        """Local leader; with L3, also the leader across processes (or a follower)."""
        l3 = self._cache.l3
        if l3 is None or f.token is not None:
            return None
        delay = _POLL_FIRST
        while True:
            held = self._try_lock(l3, f)
            if not held:
                return None  # we hold the lock, or Redis is unusable: compute
            while self._clock() < deadline and self._remote_held(l3, f.ref):
                time.sleep(delay)
                delay = min(delay * 1.5, _POLL_MAX)
            hit = self._recheck(f.ref, question, started)
            if hit is not None:
                self._end(f.key, f)  # local waiters find it in L1 now
                return hit
            if self._clock() >= deadline:
                return None

    # -- Redis lock (sync) ----------------------------------------------------------

    def _try_lock(self, l3: RedisTier, f: _Flight) -> bool:
        """True when a peer holds the lock; False when we took it or Redis failed."""
        if not self._cache._allowed("l3"):
            return False
        token = uuid.uuid4().hex
        t = time.perf_counter()
        try:
            ok = l3.client.set(self._lock_key(l3, f.ref), token, nx=True,
                               px=max(1, int(self.timeout * 1000)))
        except Exception as exc:
            self._cache._failed(l3, "lock", exc, f.ref.namespace, t)
            return False
        # The gate above may have let this call through as the breaker's probe.
        self._cache.breakers["l3"].success()
        if ok:
            f.token = token
            return False
        return True

    def _remote_held(self, l3: RedisTier, ref: Ref) -> bool:
        t = time.perf_counter()
        try:
            return bool(l3.client.exists(self._lock_key(l3, ref)))
        except Exception as exc:
            self._cache._failed(l3, "lock", exc, ref.namespace, t)
            return False

    def _unlock(self, f: _Flight) -> None:
        l3 = self._cache.l3
        if l3 is None:
            return
        t = time.perf_counter()
        try:
            l3.client.register_script(_UNLOCK)(keys=[self._lock_key(l3, f.ref)],
                                               args=[f.token or ""])
        except Exception as exc:  # the lock expires on its own
            self._cache._failed(l3, "unlock", exc, f.ref.namespace, t)

    def _lock_key(self, l3: RedisTier, ref: Ref) -> str:
        # Beside the entry, in the same hash slot; `clear` removes it with the namespace.
        return l3.data_key(ref) + self.lock_suffix

    # -- async ----------------------------------------------------------------------

    async def atry_lead(self, ref: Ref) -> bool:
        """Lead ``ref`` without waiting: True when the calling task now holds it (here
        and, with L3, across processes) until ``alanded``/``arelease`` or the task's
        end; False when another task or process does.  Redis trouble means "no lock"."""
        f, leading = self._claim(ref, _owner())
        if not leading:
            return False
        l3 = self._cache.l3
        if l3 is None or f.token is not None:
            return True
        if await self._atry_lock(l3, f):  # a peer holds it
            self._end(f.key, f)
            return False
        return True

    async def afollow(self, ref: Ref, question: str, started: float) -> CacheHit | None:
        """Async ``follow``: waiting never blocks the event loop."""
        deadline = self._clock() + self.timeout
        owner = _owner()
        while True:
            f, leading = self._claim(ref, owner)
            if leading:
                return await self._alead(f, question, started, deadline)
            await self._await(f, deadline)
            hit = await self._arecheck(ref, question, started)
            if hit is not None or self._clock() >= deadline:
                return hit

    async def _await(self, f: _Flight, deadline: float) -> None:
        left = min(deadline, f.expires) - self._clock()
        if left <= 0:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if f.done:
                return
            f.waiters.append((loop, fut))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, left)

    async def _arecheck(self, ref: Ref, question: str, started: float) -> CacheHit | None:
        c = self._cache
        now = c._clock()
        entry = c.l1.get(ref, now)
        if entry is not None:
            return c._hit(entry, "l1", "exact", 1.0, None, started, question)
        for tier in c.lower:
            entry = await c._atier_get(tier, ref, now)
            if entry is not None:
                await c._apromote(entry, tier.name, now)
                return c._hit(entry, tier.name, "exact", 1.0, None, started, question)
        return None

    async def _alead(self, f: _Flight, question: str, started: float,
                     deadline: float) -> CacheHit | None:
        l3 = self._cache.l3
        if l3 is None or f.token is not None:
            return None
        delay = _POLL_FIRST
        while True:
            if not await self._atry_lock(l3, f):
                return None
            while self._clock() < deadline and await self._aremote_held(l3, f.ref):
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, _POLL_MAX)
            hit = await self._arecheck(f.ref, question, started)
            if hit is not None:
                self._end(f.key, f)
                return hit
            if self._clock() >= deadline:
                return None

    async def _atry_lock(self, l3: RedisTier, f: _Flight) -> bool:
        if not self._cache._allowed("l3"):
            return False
        token = uuid.uuid4().hex
        t = time.perf_counter()
        try:
            client = await l3.aclient()
            ok = await client.set(self._lock_key(l3, f.ref), token, nx=True,
                                  px=max(1, int(self.timeout * 1000)))
        except Exception as exc:
            self._cache._failed(l3, "lock", exc, f.ref.namespace, t)
            return False
        # The gate above may have let this call through as the breaker's probe.
        self._cache.breakers["l3"].success()
        if ok:
            f.token = token
            return False
        return True

    async def _aremote_held(self, l3: RedisTier, ref: Ref) -> bool:
        t = time.perf_counter()
        try:
            client = await l3.aclient()
            return bool(await client.exists(self._lock_key(l3, ref)))
        except Exception as exc:
            self._cache._failed(l3, "lock", exc, ref.namespace, t)
            return False

    async def _aunlock(self, f: _Flight) -> None:
        l3 = self._cache.l3
        if l3 is None:
            return
        t = time.perf_counter()
        try:
            client = await l3.aclient()
            await client.register_script(_UNLOCK)(keys=[self._lock_key(l3, f.ref)],
                                                  args=[f.token or ""])
        except Exception as exc:
            self._cache._failed(l3, "unlock", exc, f.ref.namespace, t)
