"""Typed cache events and a tiny synchronous in-process bus.

Analytics, warming and tuning subscribe here.  Emitting is skipped entirely when
nobody listens (``EventBus.active``), so the hot path pays nothing by default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
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
    "Invalidated",
    "Miss",
    "QueryObserved",
    "Rejected",
    "Stored",
    "TierFailed",
]

_log = logging.getLogger("rag_cache_plugin")

TierName = Literal["l1", "l2", "l3"]
MatchKind = Literal["exact", "semantic"]


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """Base of every event: the namespace and the entry key it concerns (or "")."""

    namespace: str
    key: str


@dataclass(frozen=True, slots=True)
class Hit(CacheEvent):
    tier: TierName
    kind: MatchKind
    latency: float
    score: float = 1.0
    question: str = ""
    partition: str = ""


@dataclass(frozen=True, slots=True)
class Miss(CacheEvent):
    latency: float
    question: str = ""
    reason: str = "absent"
    partition: str = ""


@dataclass(frozen=True, slots=True)
class Stored(CacheEvent):
    tiers: tuple[TierName, ...]
    size: int
    latency: float
    question: str = ""
    partition: str = ""


@dataclass(frozen=True, slots=True)
class Evicted(CacheEvent):
    tier: TierName
    reason: str = "capacity"


@dataclass(frozen=True, slots=True)
class Expired(CacheEvent):
    tier: TierName


@dataclass(frozen=True, slots=True)
class Invalidated(CacheEvent):
    tags: tuple[str, ...]
    count: int


@dataclass(frozen=True, slots=True)
class Cleared(CacheEvent):
    pass


@dataclass(frozen=True, slots=True)
class TierFailed(CacheEvent):
    tier: TierName
    op: str
    error: str
    latency: float = 0.0


@dataclass(frozen=True, slots=True)
class EmbeddingFailed(CacheEvent):
    """The embedder raised or returned garbage: the lookup missed, the store went
    ahead without a vector (exact matching only)."""

    error: str
    latency: float = 0.0
    count: int = 1


@dataclass(frozen=True, slots=True)
class Corrupt(CacheEvent):
    tier: TierName
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerChanged(CacheEvent):
    tier: TierName
    state: Literal["open", "half-open", "closed"]


@dataclass(frozen=True, slots=True)
class Rejected(CacheEvent):
    """A store or an embedding was refused by a configured limit."""

    reason: str
    size: int = 0


@dataclass(frozen=True, slots=True)
class FeedbackReported(CacheEvent):
    correct: bool
    score: float
    kind: MatchKind
    partition: str = ""


# -- events framework handlers emit (LangChain callbacks, LlamaIndex instrumentation) --

Operation = Literal["llm", "chat", "embedding", "retrieval", "query", "chain", "tool"]


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class ChainBoundary(CacheEvent):
    """A top-level chain or query finished: a safe point for the tuner to act."""

    latency: float
    error: str = ""
    source: str = ""


Listener = Callable[[CacheEvent], None]


@dataclass(slots=True)
class _Subscription:
    listener: Listener
    types: tuple[type[CacheEvent], ...] | None


@dataclass
class EventBus:
    """Synchronous fan-out.  A failing listener is logged and never breaks a lookup."""

    _subs: tuple[_Subscription, ...] = field(default=())
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def subscribe(
        self, listener: Listener, types: tuple[type[CacheEvent], ...] | None = None
    ) -> Callable[[], None]:
        """Register ``listener``; returns a function that unsubscribes it."""
        sub = _Subscription(listener, types)
        with self._lock:
            # Copy-on-write: emit() iterates a tuple without taking the lock.
            self._subs = (*self._subs, sub)

        def unsubscribe() -> None:
            with self._lock:
                self._subs = tuple(s for s in self._subs if s is not sub)

        return unsubscribe

    def emit(self, event: CacheEvent) -> None:
        for sub in self._subs:
            if sub.types is not None and not isinstance(event, sub.types):
                continue
            try:
                sub.listener(event)
            except Exception:  # a listener must never break the cache
                _log.exception("rag-cache event listener failed")
