"""Turns bus events into query-log deltas.

The listener runs on the lookup hot path, so it only queues the event with the time
and a sequence number; ``drain`` (at each flush) does the work.  Events emitted while
a warming task runs (``METER`` is set in its context) are the warmer's own: they feed
that task's meter (what it spent, which keys it stored) and never count as questions.

One question asked through a framework shows up twice: the core's ``Hit``/``Miss``
(with the entry key and partition) and, when the call ends, the handler's
``QueryObserved`` (with the context, latency, tokens).  They are paired by canonical
question so it counts once; an unpaired ``QueryObserved`` counts on its own.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._events import CacheEvent, CallCompleted, Cleared, Expired, Hit, Miss, QueryObserved, Stored
from .._keys import canonicalize
from .rows import Row

if TYPE_CHECKING:
    from .._analytics.prices import PriceTable
    from .._core import RagCache

__all__ = ["EVENT_TYPES", "METER", "Meter", "Recorder"]

EVENT_TYPES = (Hit, Miss, Stored, Expired, Cleared, QueryObserved, CallCompleted)
_MODEL_OPS = frozenset({"llm", "chat"})
_PAIR_SLACK = 5.0  # seconds between a lookup and its QueryObserved beyond the call's latency
_QUEUE_MAX = 50_000  # drained inline beyond this when nobody flushes
_RECENT_MAX = 10_000


@dataclass(slots=True)
class Meter:
    """What one warming task's context saw: model calls, answered queries, stores."""

    calls: list[tuple[str, int, int]] = field(default_factory=list)
    queries: list[tuple[str, int, int]] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)

    def add(self, ev: CacheEvent) -> None:
        if isinstance(ev, CallCompleted):
            if ev.op in _MODEL_OPS and not ev.cached and not ev.error:
                self.calls.append((ev.model, ev.input_tokens, ev.output_tokens))
        elif isinstance(ev, QueryObserved):
            if not ev.cached:
                self.queries.append((ev.model, ev.input_tokens, ev.output_tokens))
        elif isinstance(ev, Stored):
            self.stored.append(ev.key)

    def usage(self) -> list[tuple[str, int, int]]:
        # Model calls when a handler reported them, else the answered queries: the
        # same work seen by two handlers must not count twice.
        return self.calls or self.queries


METER: ContextVar[Meter | None] = ContextVar("rag_cache_warming_meter", default=None)


@dataclass(slots=True)
class _Recent:
    namespace: str
    key: str
    partition: str
    at: float
    taken: bool = False


class Recorder:
    """Listener plus the deltas gathered since the last ``take``."""

    def __init__(self, cache: RagCache, clock: Callable[[], float], half_life: float,
                 prices: PriceTable) -> None:
        self.cache = cache
        self.clock = clock
        self.half_life = half_life
        self.prices = prices
        self._queue: deque[tuple[CacheEvent, float, int, bool]] = deque()
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._recent: dict[str, deque[_Recent]] = {}
        self.deltas: dict[str, Row] = {}
        self.warm_hits: Counter[str] = Counter()
        self.replaced: set[str] = set()
        self.expired: set[str] = set()
        self.cleared: list[str | None] = []
        # Warmed keys whose hits count: key -> (after this sequence number, from this time).
        self.warmed: dict[str, tuple[int, float]] = {}

    # -- hot path -------------------------------------------------------------------------

    def listener(self, ev: CacheEvent) -> None:
        meter = METER.get()
        if meter is not None:
            meter.add(ev)
            if not isinstance(ev, Stored):
                return  # the warmer's own lookups and calls are not questions
        self._queue.append((ev, self.clock(), next(self._seq), meter is not None))
        if len(self._queue) > _QUEUE_MAX:
            self.drain()

    def mark(self) -> int:
        """A sequence number: events queued after this call carry larger ones."""
        return next(self._seq)

    # -- processing -------------------------------------------------------------------------

    def drain(self) -> None:
        with self._lock:
            q = self._queue
            for _ in range(len(q)):
                ev, t, seq, warming = q.popleft()
                self._apply(ev, t, seq, warming)
            if len(self._recent) > _RECENT_MAX:
                self._recent.clear()  # pairing only spans seconds

    def take(self) -> tuple[list[Row], Counter[str], set[str], set[str], list[str | None]]:
        """Drain, then hand over (deltas, warm hits, replaced warmed keys, expired keys,
        cleared namespaces) and start afresh."""
        self.drain()
        with self._lock:
            out = (list(self.deltas.values()), self.warm_hits, self.replaced, self.expired,
                   self.cleared)
            self.deltas, self.warm_hits, self.replaced = {}, Counter(), set()
            self.expired, self.cleared = set(), []
        return out

    def _delta(self, key: str, namespace: str, partition: str, canonical: str,
               question: str, *, asked: bool = True) -> Row:
        """The delta of ``key``; ``question`` becomes its text when it was ``asked``
        (a stored question only names a row nobody asked yet)."""
        d = self.deltas.get(key)
        if d is None:
            d = self.deltas[key] = Row(key, namespace, partition, canonical, question)
        elif question and asked:
            d.question = question
        return d

    def _apply(self, ev: CacheEvent, t: float, seq: int, warming: bool) -> None:
        if isinstance(ev, Hit | Miss):
            self._lookup(ev, t, seq)
        elif isinstance(ev, Stored):
            self._stored(ev, t, warming)
        elif isinstance(ev, QueryObserved):
            self._observed(ev, t)
        elif isinstance(ev, CallCompleted):
            self._call(ev, t)
        elif isinstance(ev, Expired):
            self.expired.add(ev.key)
        elif isinstance(ev, Cleared):
            self.cleared.append(ev.namespace or None)

    def _lookup(self, ev: Hit | Miss, t: float, seq: int) -> None:
        canonical = canonicalize(ev.question)
        if not canonical or not ev.partition:
            return
        key = self.cache.keys.entry(ev.partition, canonical)
        d = self._delta(key, ev.namespace, ev.partition, canonical, ev.question)
        d.observe(t, self.half_life)
        if isinstance(ev, Hit):
            d.hits += 1
            d.cached = True
            if ev.kind == "semantic":
                d.served_by = ev.key
            since = self.warmed.get(ev.key)
            if since is not None and seq > since[0] and t >= since[1]:
                self.warm_hits[ev.key] += 1
        else:
            d.misses += 1
            d.cached = False
        self._recent.setdefault(canonical, deque(maxlen=16)).append(
            _Recent(ev.namespace, key, ev.partition, t))

    def _stored(self, ev: Stored, t: float, warming: bool) -> None:
        canonical = canonicalize(ev.question)
        if canonical and ev.partition:
            d = self._delta(ev.key, ev.namespace, ev.partition, canonical, ev.question,
                            asked=False)
            d.stored(ev.digest, ev.expires, t)
        if not warming and self.warmed.pop(ev.key, None) is not None:
            self.replaced.add(ev.key)  # a user's answer replaced the warmed one

    def _pair(self, canonical: str, namespace: str, t: float, window: float) -> _Recent | None:
        for r in self._recent.get(canonical, ()):
            if not r.taken and t - r.at <= window and r.namespace == namespace:
                r.taken = True
                return r
        for r in self._recent.get(canonical, ()):  # a handler bound to another namespace
            if not r.taken and t - r.at <= window:
                r.taken = True
                return r
        return None

    def _observed(self, ev: QueryObserved, t: float) -> None:
        canonical = canonicalize(ev.question)
        if not canonical:
            return
        r = self._pair(canonical, ev.namespace, t, ev.latency + _PAIR_SLACK)
        if r is not None:
            d = self._delta(r.key, r.namespace, r.partition, canonical, ev.question)
        else:
            try:
                ref = self.cache.ref(ev.question, context=ev.context, llm_string=ev.llm_string,
                                     namespace=ev.namespace or None)
            except ValueError:
                return
            d = self._delta(ref.key, ref.namespace, ref.partition, canonical, ev.question)
            d.observe(t, self.half_life)
        d.context, d.llm_string = ev.context, ev.llm_string
        if not ev.cached:
            d.computed_once(ev.latency, ev.input_tokens, ev.output_tokens,
                            self.prices.cost(ev.model, ev.input_tokens, ev.output_tokens),
                            ev.model)

    def _call(self, ev: CallCompleted, t: float) -> None:
        """A model call reported without ``QueryObserved``: it tells what a miss costs."""
        if ev.op not in _MODEL_OPS or ev.cached or ev.error or not ev.question:
            return
        canonical = canonicalize(ev.question)
        for r in reversed(self._recent.get(canonical, ())):
            if t - r.at <= ev.latency + _PAIR_SLACK:
                d = self._delta(r.key, r.namespace, r.partition, canonical, ev.question,
                                asked=False)
                d.computed_once(ev.latency, ev.input_tokens, ev.output_tokens,
                                self.prices.cost(ev.model, ev.input_tokens, ev.output_tokens),
                                ev.model)
                return

    # -- warmed keys ------------------------------------------------------------------------

    def track(self, keys: dict[str, float], after: int | None = None) -> None:
        """Count later hits on ``keys`` (key -> warmed at); ``after``: a ``mark()``."""
        with self._lock:
            for key, at in keys.items():
                self.warmed[key] = (after if after is not None else 0, at)

    def forget_warmed(self, keep: Any) -> None:
        """Drop tracked keys not in ``keep`` (another process replaced them)."""
        with self._lock:
            for key in [k for k in self.warmed if k not in keep]:
                del self.warmed[key]
