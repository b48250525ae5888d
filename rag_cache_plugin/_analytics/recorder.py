"""The event listener: per-thread shards; a hit costs two ``deque.append`` calls.

Each thread that emits gets its own shard and is its only writer, so counts are
exact without a lock and a lookup never waits.  A hit appends its latency (to the
queue of its tier and kind) and its entry key; the background thread drains the
queues every second with ``popleft`` (atomic, so owners keep appending) and
buckets the latencies with numpy.  Floats and strings are not tracked by the
garbage collector, so queued samples add no GC work.  Other events are rarer
and update their shard's counters directly.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from .._events import CacheEvent, Hit
from .costs import CostBook
from .handlers import dispatch_table
from .histogram import _LAST, _OFFSET, _SCALE, BUCKETS, bucket_of
from .metrics import LATENCIES
from .prices import PriceTable

__all__ = ["SUM", "Recorder", "Shard"]

_log = logging.getLogger("rag_cache_plugin.analytics")
SUM = BUCKETS
"""Index of the running sum in every histogram list (after the bucket counts)."""
QUEUE_MAX = 4_000_000
"""Hits a thread may queue between drains (the background thread drains every second)."""
_TIERS = ("l1", "l2", "l3")
_SEMANTIC = tuple(f"semantic.{t}" for t in _TIERS)


def _hist() -> list[float]:
    return [0] * BUCKETS + [0.0]


class Shard:
    """One thread's numbers.  Only the owning thread writes (the base shard: only
    the drainer, under the engine's lock)."""

    __slots__ = ("c", "errors", "exact", "h", "keys", "missed", "semantic", "thread")

    def __init__(self, thread: threading.Thread | None) -> None:
        self.thread = thread
        self.c: defaultdict[str, float] = defaultdict(int)
        # Histograms are lists: BUCKETS counts, then the sum of the values.
        self.h: dict[str, list[float]] = {n: _hist() for n in (*LATENCIES, *_SEMANTIC)}
        self.exact: dict[str, deque[float]] = {t: deque(maxlen=QUEUE_MAX) for t in _TIERS}
        self.semantic: dict[str, deque[float]] = {t: deque(maxlen=QUEUE_MAX) for t in _TIERS}
        self.keys: deque[str] = deque(maxlen=QUEUE_MAX)
        self.missed: dict[str, int] = {}
        self.errors: dict[str, str] = {}

    def observe(self, name: str, value: float) -> None:
        h = self.h[name]
        h[bucket_of(value)] += 1
        h[SUM] += value

    def fold(self, other: Shard) -> None:
        """Add a finished thread's numbers (its queues must be drained first)."""
        for k, v in dict(other.c).items():
            self.c[k] += v
        for name, theirs in other.h.items():
            mine = self.h[name]
            for i, x in enumerate(theirs):
                if x:
                    mine[i] += x
        for q, x in dict(other.missed).items():
            self.missed[q] = self.missed.get(q, 0) + x
        self.errors.update(other.errors)


def _take(q: deque[Any]) -> list[Any]:
    pop = q.popleft
    return [pop() for _ in range(len(q))]


def _add_samples(h: list[float], values: list[float]) -> None:
    if len(values) < 64:  # numpy's call overhead only pays off for batches
        for v in values:
            h[bucket_of(v)] += 1
        h[SUM] += math.fsum(values)
        return
    arr = np.asarray(values, dtype=np.float64)
    idx = np.floor(np.log(np.maximum(arr, 1e-300)) * _SCALE + _OFFSET)
    counts = np.bincount(np.clip(idx, 0, _LAST).astype(np.int64), minlength=BUCKETS)
    for b in np.flatnonzero(counts):
        h[int(b)] += int(counts[b])
    h[SUM] += math.fsum(values)


class Recorder:
    """``recorder.listener`` is what subscribes to the bus."""

    def __init__(self, prices: PriceTable, *, association_window: float = 60.0) -> None:
        self.book = CostBook(prices, association_window)
        self.base = Shard(None)
        self.shards: list[Shard] = []
        self._tls = threading.local()
        self._lock = threading.Lock()
        self.listener = self._make_listener(dispatch_table(self.book))

    def _new_shard(self) -> Shard:
        s = Shard(threading.current_thread())
        self._tls.shard = s
        with self._lock:
            self.shards.append(s)
        return s

    def _make_listener(self, dispatch: dict[type[CacheEvent], Callable[[Shard, Any], None]]
                       ) -> Callable[[CacheEvent], None]:
        # What the hot path touches are closure cells and locals: no lookups on self.
        tls, new_shard, hit_type = self._tls, self._new_shard, Hit

        def listener(ev: Any) -> None:
            try:
                s = tls.shard
            except AttributeError:
                s = new_shard()
            if type(ev) is hit_type:
                (s.exact if ev.kind == "exact" else s.semantic)[ev.tier].append(ev.latency)
                s.keys.append(ev.key)
                return
            handler = dispatch.get(type(ev))
            if handler is not None:
                handler(s, ev)

        return listener

    # -- draining and reading (the engine holds its lock) -------------------------------

    def all_shards(self) -> list[Shard]:
        with self._lock:
            return [self.base, *self.shards]

    def drain(self) -> list[str]:
        """Move queued hit latencies into the base histograms, fold finished
        threads' shards, and return the keys hit since the last drain."""
        base, keys = self.base, []
        with self._lock:
            shards = list(self.shards)
        for s in shards:
            for tier in _TIERS:
                for q, name in ((s.exact[tier], tier), (s.semantic[tier], f"semantic.{tier}")):
                    if len(q) >= QUEUE_MAX:
                        _log.warning("rag-cache analytics fell behind: hits were dropped "
                                     "(capture more often or keep the background thread on)")
                    if q:
                        _add_samples(base.h[name], _take(q))
            keys.extend(_take(s.keys))
        with self._lock:
            done = [s for s in self.shards if s.thread is not None and not s.thread.is_alive()]
            self.shards = [s for s in self.shards if s not in done]
        for s in done:  # it never writes again: drain what it queued last, then fold
            for tier in _TIERS:
                _add_samples(base.h[tier], _take(s.exact[tier]))
                _add_samples(base.h[f"semantic.{tier}"], _take(s.semantic[tier]))
            keys.extend(_take(s.keys))
            base.fold(s)
        return keys
