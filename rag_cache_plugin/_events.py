"""Typed cache events and a tiny synchronous in-process bus.

Analytics, warming and tuning subscribe here.  Emitting is skipped entirely when
nobody listens (``EventBus.active``), so the hot path pays nothing by default.

Events are read-only by contract but not ``frozen``: a frozen dataclass sets each
field through ``object.__setattr__`` and builds about five times slower, and a
``Hit`` is built on every lookup while anyone listens.  ``unsafe_hash`` keeps them
hashable and comparable by value, as frozen ones were.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BreakerChanged",
    "CacheEvent",
    "CallCompleted",
    "ChainBoundary",
    "Cleared",
    "Corrupt",
    "EmbeddingFailed",
    "EventBus",
    "Evicted",
    "Expired",
    "FeedbackReported",
    "Hit",
    "HitLog",
    "Invalidated",
    "Miss",
    "QueryObserved",
    "RedisAdjusted",
    "RedisHealth",
    "Rejected",
    "Stored",
    "TierFailed",
]

_log = logging.getLogger("rag_cache_plugin")

TierName = Literal["l1", "l2", "l3"]
MatchKind = Literal["exact", "semantic"]


@dataclass(slots=True, unsafe_hash=True)
class CacheEvent:
    """Base of every event: the namespace and the entry key it concerns (or "")."""

    namespace: str
    key: str


@dataclass(slots=True, unsafe_hash=True)
class Hit(CacheEvent):
    tier: TierName
    kind: MatchKind
    latency: float
    score: float = 1.0
    question: str = ""
    partition: str = ""


@dataclass(slots=True, unsafe_hash=True)
class Miss(CacheEvent):
    latency: float
    question: str = ""
    reason: str = "absent"
    partition: str = ""


@dataclass(slots=True, unsafe_hash=True)
class Stored(CacheEvent):
    tiers: tuple[TierName, ...]
    size: int
    latency: float
    question: str = ""
    partition: str = ""
    expires: float | None = None
    """When the entry expires (None: never)."""
    digest: str = ""
    """A short hash of the stored value: two stores of one key with different
    digests mean the answer changed on recomputation."""


@dataclass(slots=True, unsafe_hash=True)
class Evicted(CacheEvent):
    tier: TierName
    reason: str = "capacity"


@dataclass(slots=True, unsafe_hash=True)
class Expired(CacheEvent):
    tier: TierName


@dataclass(slots=True, unsafe_hash=True)
class Invalidated(CacheEvent):
    tags: tuple[str, ...]
    count: int


@dataclass(slots=True, unsafe_hash=True)
class Cleared(CacheEvent):
    pass


@dataclass(slots=True, unsafe_hash=True)
class TierFailed(CacheEvent):
    tier: TierName
    op: str
    error: str
    latency: float = 0.0


@dataclass(slots=True, unsafe_hash=True)
class EmbeddingFailed(CacheEvent):
    """The embedder raised or returned garbage: the lookup missed, the store went
    ahead without a vector (exact matching only)."""

    error: str
    latency: float = 0.0
    count: int = 1


@dataclass(slots=True, unsafe_hash=True)
class Corrupt(CacheEvent):
    tier: TierName
    reason: str


@dataclass(slots=True, unsafe_hash=True)
class BreakerChanged(CacheEvent):
    tier: TierName
    state: Literal["open", "half-open", "closed"]


@dataclass(slots=True, unsafe_hash=True)
class Rejected(CacheEvent):
    """A store or an embedding was refused by a configured limit."""

    reason: str
    size: int = 0


@dataclass(slots=True, unsafe_hash=True)
class FeedbackReported(CacheEvent):
    correct: bool
    score: float
    kind: MatchKind
    partition: str = ""


# -- events framework handlers emit (LangChain callbacks, LlamaIndex instrumentation) --

Operation = Literal["llm", "chat", "embedding", "retrieval", "query", "chain", "tool"]


@dataclass(slots=True, unsafe_hash=True)
class CallCompleted(CacheEvent):
    """A model, retriever, query engine or chain call observed by a framework handler
    (analytics counts these: latency, tokens, cost, errors)."""

    op: Operation
    latency: float
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False
    """The framework got the answer from this cache (its cache marks said so)."""
    error: str = ""
    question: str = ""
    source: str = ""
    """"langchain" or "llama_index"."""


@dataclass(slots=True, unsafe_hash=True)
class QueryObserved(CacheEvent):
    """A question a user asked, with what answering it cost (warming's query log)."""

    question: str
    latency: float
    context: str = ""
    llm_string: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False
    source: str = ""


@dataclass(slots=True, unsafe_hash=True)
class ChainBoundary(CacheEvent):
    """A top-level chain or query finished: a safe point for the tuner to act."""

    latency: float
    error: str = ""
    source: str = ""


# -- events of the Redis operations monitor (``redis_ops``) ------------------------

RedisStatus = Literal["ok", "degraded", "down"]


@dataclass(slots=True, unsafe_hash=True)
class RedisHealth(CacheEvent):
    """One health check of the L3 Redis (standalone, cluster or Sentinel-managed):
    what analytics alerts on and folds into its health score."""

    status: RedisStatus
    mode: str = "standalone"
    nodes: int = 0
    nodes_down: int = 0
    slots_uncovered: int = 0
    memory_ratio: float = 0.0
    """Highest used/maxmemory over the primaries (0 when no maxmemory is set)."""
    evicted_keys: int = 0
    """Keys evicted since the previous check (all primaries)."""
    expired_keys: int = 0
    hit_ratio: float | None = None
    """Keyspace hit ratio since the previous check (None without lookups)."""
    ops_per_sec: float = 0.0
    max_latency_ms: float = 0.0
    """Slowest PING round trip of any node."""
    promoted: tuple[str, ...] = ()
    """Nodes (``host:port``) that became primaries since the previous check."""
    problems: tuple[str, ...] = ()


@dataclass(slots=True, unsafe_hash=True)
class RedisAdjusted(CacheEvent):
    """An automatic configuration change made by the Redis monitor (opt-in)."""

    node: str
    setting: str
    old: str
    new: str
    reason: str


Listener = Callable[[CacheEvent], None]


@dataclass(slots=True)
class _Subscription:
    listener: Listener
    types: tuple[type[CacheEvent], ...] | None


class HitLog:
    """Queues the core appends every hit to, at C speed: the latency to its (kind, tier)
    queue and the entry key to ``keys``.  Analytics drains them (``popleft`` is
    atomic, so threads keep appending); a full queue drops its oldest items.
    ``l1_exact`` and ``key`` are the bound ``append``s the L1 hit path calls."""

    __slots__ = ("key", "keys", "l1_exact", "latencies")

    def __init__(self, maxlen: int) -> None:
        self.latencies: dict[tuple[MatchKind, TierName], deque[float]] = {
            (k, t): deque(maxlen=maxlen) for k in ("exact", "semantic") for t in ("l1", "l2", "l3")}
        self.keys: deque[str] = deque(maxlen=maxlen)
        self.l1_exact = self.latencies["exact", "l1"].append
        self.key = self.keys.append

    def record(self, key: str, tier: TierName, kind: MatchKind, latency: float) -> None:
        self.latencies[kind, tier].append(latency)
        self.keys.append(key)


class EventBus:
    """Synchronous fan-out.  A failing listener is logged and never breaks a lookup.

    Hits are the hot path: no ``Hit`` object is built unless a listener subscribed
    for ``Hit`` events (``wants_hits``), and an attached ``HitLog`` records every hit
    without calling Python code.
    """

    __slots__ = ("_lock", "_subs", "active", "hit_log", "wants_hits")

    def __init__(self) -> None:
        self._subs: tuple[_Subscription, ...] = ()
        self._lock = threading.Lock()
        self.hit_log: HitLog | None = None
        # Plain attributes because the hot path reads them.
        self.active = False
        """True while anyone listens."""
        self.wants_hits = False

    def _changed(self) -> None:
        self.active = bool(self._subs) or self.hit_log is not None
        self.wants_hits = any(s.types is None or any(issubclass(Hit, t) for t in s.types)
                              for s in self._subs)

    def subscribe(
        self, listener: Listener, types: tuple[type[CacheEvent], ...] | None = None
    ) -> Callable[[], None]:
        """Register ``listener``; returns a function that unsubscribes it."""
        sub = _Subscription(listener, types)
        with self._lock:
            # Copy-on-write: emit() iterates a tuple without taking the lock.
            self._subs = (*self._subs, sub)
            self._changed()

        def unsubscribe() -> None:
            with self._lock:
                self._subs = tuple(s for s in self._subs if s is not sub)
                self._changed()

        return unsubscribe

    def attach_hit_log(self, log: HitLog) -> Callable[[], None] | None:
        """Make ``log`` record every hit; None if another log is attached (its owner
        drains it, so a second reader subscribes to ``Hit`` events instead)."""
        with self._lock:
            if self.hit_log is not None:
                return None
            self.hit_log = log
            self._changed()

        def detach() -> None:
            with self._lock:
                if self.hit_log is log:
                    self.hit_log = None
                    self._changed()

        return detach

    def emit(self, event: CacheEvent) -> None:
        if type(event) is Hit and self.hit_log is not None:
            try:
                self.hit_log.record(event.key, event.tier, event.kind, event.latency)
            except KeyError:  # a tier or kind the log does not know: not a cache hit
                _log.warning("rag-cache: Hit with unknown tier or kind %r, %r",
                             event.tier, event.kind)
        for sub in self._subs:
            if sub.types is not None and not isinstance(event, sub.types):
                continue
            try:
                sub.listener(event)
            except Exception:  # a listener must never break the cache
                _log.exception("rag-cache event listener failed")

    def hit(self, namespace: str, key: str, tier: TierName, kind: MatchKind, latency: float,
            score: float, question: str, partition: str) -> None:
        """Report a hit: as a ``Hit`` event if a listener wants one (``emit`` logs it),
        else straight to the log."""
        if self.wants_hits:
            self.emit(Hit(namespace, key, tier, kind, latency, score, question, partition))
        elif self.hit_log is not None:
            self.hit_log.record(key, tier, kind, latency)
