"""Recording: hits through a ``HitLog``, other events into per-thread shards.

The core appends each hit's latency and key to the recorder's ``HitLog`` (two
``deque.append`` calls, no Python code, no object that the garbage collector
tracks).  ``append`` and ``popleft`` are atomic, so hits from any thread are
counted exactly without a lock; the background thread drains the queues every
second, in C (``starmap`` over ``popleft``), and buckets the latencies with numpy.
Other events are rarer and do read-modify-write on counters, so each thread that
emits them gets its own shard, of which it is the only writer.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from itertools import repeat, starmap
from typing import Any

import numpy as np

from .._events import CacheEvent, Hit, HitLog
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

    __slots__ = ("c", "errors", "h", "missed", "thread")

    def __init__(self, thread: threading.Thread | None) -> None:
        self.thread = thread
        self.c: defaultdict[str, float] = defaultdict(int)
        # Histograms are lists: BUCKETS counts, then the sum of the values.
        self.h: dict[str, list[float]] = {n: _hist() for n in (*LATENCIES, *_SEMANTIC)}
        self.missed: dict[str, int] = {}
        self.errors: dict[str, str] = {}

    def observe(self, name: str, value: float) -> None:
        h = self.h[name]
        h[bucket_of(value)] += 1
        h[SUM] += value

    def fold(self, other: Shard) -> None:
        """Add a finished thread's numbers."""
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
    """What ``q`` holds now, popped in C; items appended meanwhile stay queued."""
    return list(starmap(q.popleft, repeat((), len(q))))


def _add_samples(h: list[float], values: Sequence[float]) -> None:
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
        self.hits = HitLog(QUEUE_MAX)
        """What the engine attaches to the bus (``EventBus.attach_hit_log``)."""
        table = dispatch_table(self.book)
        self.listener = self._make_listener(table)
        self.event_types: tuple[type[CacheEvent], ...] = tuple(table)
        """What ``listener`` needs beside the hit log: every event but ``Hit`` (a ``Hit``
        it is given goes to the log)."""

    def _new_shard(self) -> Shard:
        s = Shard(threading.current_thread())
        self._tls.shard = s
        with self._lock:
            self.shards.append(s)
        return s

    def _make_listener(self, dispatch: dict[type[CacheEvent], Callable[[Shard, Any], None]]
                       ) -> Callable[[CacheEvent], None]:
        # What the hot path touches are closure cells and locals: no lookups on self.
        tls, new_shard, hit_type, record = self._tls, self._new_shard, Hit, self.hits.record

        def listener(ev: Any) -> None:
            if type(ev) is hit_type:
                record(ev.key, ev.tier, ev.kind, ev.latency)
                return
            try:
                s = tls.shard
            except AttributeError:
                s = new_shard()
            handler = dispatch.get(type(ev))
            if handler is not None:
                handler(s, ev)

        return listener

    # -- draining and reading (the engine holds its lock) -------------------------------

    def all_shards(self) -> list[Shard]:
        with self._lock:
            return [self.base, *self.shards]

    def _drain_hits(self) -> list[str]:
        """Bucket the queued hits' latencies; return their keys."""
        h = self.base.h
        for (kind, tier), q in self.hits.latencies.items():
            if len(q) >= QUEUE_MAX:
                _log.warning("rag-cache analytics fell behind: hits were dropped "
                             "(capture more often or keep the background thread on)")
            if q:
                _add_samples(h[tier if kind == "exact" else f"semantic.{tier}"], _take(q))
        return _take(self.hits.keys)

    def drain(self) -> list[str]:
        """Move queued hit latencies into the base histograms, fold finished
        threads' shards, and return the keys hit since the last drain."""
        keys = self._drain_hits()
        with self._lock:
            done = [s for s in self.shards if s.thread is not None and not s.thread.is_alive()]
            self.shards = [s for s in self.shards if s not in done]
        for s in done:  # it never writes again: fold its counters into the base
            self.base.fold(s)
        return keys
