"""``_CacheBase``, what every part of ``RagCache`` builds on: its state, breakers and
events, a question's address (``Ref``), hits and misses, and building an entry; and
``SemanticLayer``, what the core needs from semantic matching."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._breaker import CircuitBreaker
from ._codec import Codec
from ._config import CacheConfig
from ._core_checks import _check_ns, _check_tags, _context_text, _Oversize
from ._core_hit import CacheHit, _new_hit
from ._entry import Entry
from ._events import (
    BreakerChanged,
    CacheEvent,
    EventBus,
    Hit,
    MatchKind,
    Miss,
    Rejected,
    TierFailed,
    TierName,
)
from ._keys import KeyMaker, canonicalize
from ._tiers import Ref, Tier

if TYPE_CHECKING:
    from ._flight import FlightTable
    from ._news import NewsFeed
    from ._tiers.memory import MemoryTier
    from ._tiers.redis import RedisTier
    from ._tiers.sqlite import SqliteTier

__all__ = ["SemanticLayer"]

_log = logging.getLogger("rag_cache_plugin")

_MEMO_MAX = 16_384
_MEMO_MAX_CHARS = 65_536  # longer prompts are hashed each time rather than pinned in memory
_MAX_TTL = 100 * 365 * 86_400.0  # Redis refuses expiry times far beyond this
# Keys whose lookups miss in this context (see ``RagCache.bypass``).
_BYPASSED: ContextVar[frozenset[str]] = ContextVar("rag_cache_bypassed", default=frozenset())


class SemanticLayer(Protocol):
    """What the core needs from semantic matching (implemented in ``_semantic``)."""

    def vector_for(self, canonical: str, namespace: str) -> bytes | None: ...
    async def avector_for(self, canonical: str, namespace: str) -> bytes | None: ...
    def lookup(self, ref: Ref, question: str, canonical: str, now: float) -> CacheHit | None: ...
    async def alookup(
        self, ref: Ref, question: str, canonical: str, now: float
    ) -> CacheHit | None: ...
    def added(self, entry: Entry) -> None: ...
    def news_fields(self, entry: Entry) -> dict[str, Any]: ...
    def removed(self, keys: Iterable[str], namespace: str | None = None,
                partitions: Mapping[str, str] | None = None) -> None: ...
    def cleared(self, namespace: str | None) -> None: ...
    def feedback(self, hit: CacheHit, correct: bool) -> None: ...
    def close(self) -> None: ...


class _CacheBase:
    """``RagCache``'s state and the helpers its sync and async operations share."""

    # Set by ``RagCache.__init__``.
    config: CacheConfig
    bus: EventBus
    namespace: str
    default_ttl: float | None
    promote_to: tuple[str, ...]
    _clock: Callable[[], float]
    _emit: Callable[[CacheEvent], None]
    keys: KeyMaker
    codec: Codec
    _memo: dict[tuple[str, str, str, str], tuple[Ref, str]]
    l1: MemoryTier
    l2: SqliteTier | None
    l3: RedisTier | None
    breakers: dict[str, CircuitBreaker]
    lower: tuple[Tier, ...]
    news: NewsFeed
    _watched: set[str]
    semantic: SemanticLayer | None
    flights: FlightTable
    _bypassing: int

    # -- plumbing -----------------------------------------------------------------

    def _emit_if_active(self, event: Any) -> None:
        if self.bus.active:
            self._emit(event)

    def _breaker(self, tier: TierName, threshold: int, reset: float) -> CircuitBreaker:
        def changed(state: Literal["open", "half-open", "closed"]) -> None:
            self._emit_if_active(BreakerChanged("", "", tier, state))
        return CircuitBreaker(threshold, reset, on_change=changed)

    def _allowed(self, tier: str) -> bool:
        b = self.breakers.get(tier)
        return b is None or b.allow()

    def _failed(self, tier: Tier, op: str, exc: BaseException, ns: str, started: float) -> None:
        self.breakers[tier.name].failure()
        _log.debug("rag-cache: %s %s failed: %s", tier.name, op, exc)
        self._emit_if_active(
            TierFailed(ns, "", tier.name, op, f"{type(exc).__name__}: {exc}",
                       perf_counter() - started))

    def _ref(self, question: str, context: Any, llm_string: str,
             namespace: str | None) -> tuple[Ref, str]:
        """(ref, canonical question); memoized so an exact repeat hashes nothing."""
        ns = self.namespace if namespace is None else namespace
        memo_key = (question, context, llm_string, ns)
        try:
            return self._memo[memo_key]
        except KeyError:
            pass
        except TypeError:  # unhashable context (a list of messages): not memoized
            pass
        if not isinstance(question, str):
            raise ValueError(f"question must be a string, not {type(question).__name__}")
        if not isinstance(llm_string, str):
            raise ValueError("llm_string must be a string")
        _check_ns(ns)
        if len(question) > self.config.max_question_chars:
            raise _Oversize(len(question))
        ctx = _context_text(context)
        canonical = canonicalize(question)
        partition = self.keys.partition(ns, llm_string, ctx)
        result = (Ref(self.keys.entry(partition, canonical), ns, partition), canonical)
        if isinstance(context, str) and len(question) + len(context) < _MEMO_MAX_CHARS:
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[memo_key] = result
        if ns not in self._watched:
            self._watched.add(ns)
            self.news.watch(ns)
        return result

    def ref(self, question: str, *, context: Any = "", llm_string: str = "",
            namespace: str | None = None) -> Ref:
        """The address of a question's entry (key, namespace, partition)."""
        try:
            return self._ref(question, context, llm_string, namespace)[0]
        except _Oversize as exc:
            raise ValueError(f"question longer than max_question_chars ({exc})") from None

    def _oversize(self, ns: str | None, size: int, what: str) -> None:
        self._emit_if_active(Rejected(ns or self.namespace, "", f"{what} too long", size))

    def _hit(self, entry: Entry, tier: TierName, kind: MatchKind, score: float,
             evidence: Mapping[str, Any] | None, started: float, question: str) -> CacheHit:
        hit = _new_hit(entry.value, tier, kind, score, entry.key, entry.namespace,
                       entry.partition, entry.question, entry.expires, evidence)
        if self.bus.active:
            self.bus.hit(entry.namespace, entry.key, tier, kind, perf_counter() - started,
                         score, question, entry.partition)
        return hit

    def _l1_hit(self, entry: Entry, started: float, question: str) -> CacheHit:
        hit: CacheHit | None = entry.hit
        if hit is None:
            hit = entry.hit = CacheHit(entry.value, "l1", "exact", 1.0, entry.key,
                                       entry.namespace, entry.partition, entry.question,
                                       entry.expires)
        bus = self.bus
        if bus.active:  # ``EventBus.hit`` inlined: every L1 hit passes here
            if bus.wants_hits:  # emit() logs it too
                self._emit(Hit(entry.namespace, entry.key, "l1", "exact",
                               perf_counter() - started, 1.0, question, entry.partition))
            else:
                log = bus.hit_log
                if log is not None:
                    log.l1_exact(perf_counter() - started)
                    log.key(entry.key)
        return hit

    def _miss(self, ref: Ref, started: float, question: str, reason: str = "absent") -> None:
        if self.bus.active:
            self._emit(Miss(ref.namespace, ref.key, perf_counter() - started, question,
                            reason, ref.partition))

    # -- entries ------------------------------------------------------------------

    def _entry(self, ref: Ref, question: str, value: Any, ttl: float | None,
               tags: Iterable[str] | None, now: float) -> Entry:
        """Validate the caller's arguments and build the entry (not yet encoded)."""
        tags_t = _check_tags(tags)
        if ttl is None:
            ttl = self.default_ttl
        elif (isinstance(ttl, bool) or not isinstance(ttl, int | float)
              or not 0 < ttl <= _MAX_TTL):  # also refuses NaN and infinity
            raise ValueError(f"ttl must be a positive number of seconds, at most {_MAX_TTL:g}")
        return Entry(ref.key, ref.namespace, ref.partition, question, value, now,
                     None if ttl is None else now + ttl, tags_t)

    def _finish_entry(self, entry: Entry) -> bool:
        """Encode (ValueError for non-JSON data); False if over the size limit."""
        self.codec.encode(entry, normalize=True)
        if entry.size > self.config.max_entry_bytes:
            self._emit_if_active(Rejected(entry.namespace, entry.key, "entry too large",
                                          entry.size))
            return False
        return True
