"""``RagCache``: lookup, store and invalidation across the tiers.

Read path: L1 -> L2 -> L3, first hit wins and is promoted upward with its
remaining TTL; on a miss with semantic matching on, the semantic layer searches
the partition.  Writes go to every tier.  A failing tier is a miss plus an event,
never an exception: every L2/L3 call sits behind a circuit breaker.

This module holds the constructor and the sync operations; ``RagCache`` inherits the
rest, one job per module: ``_core_base`` (state, addresses, hits and misses),
``_core_tiers`` (tier calls behind breakers, the repair queue), ``_core_news`` (news
to and from peers) and ``_core_async`` (the async twins).  ``CacheHit`` is defined in
``_core_hit``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ._breaker import CircuitBreaker
from ._codec import Codec, derive_key
from ._config import CacheConfig
from ._core_async import _AsyncOps
from ._core_base import _BYPASSED, SemanticLayer
from ._core_checks import _check_ns, _check_tags, _Oversize
from ._core_hit import CacheHit
from ._core_news import _ALL
from ._events import EventBus, FeedbackReported, TierFailed, TierName
from ._flight import FlightTable
from ._keys import KeyMaker
from ._news import NewsFeed, NewsSource, RedisNews, SqliteNews
from ._tiers import Ref, Tier
from ._tiers.memory import MemoryTier

if TYPE_CHECKING:
    from ._tiers.redis import RedisTier
    from ._tiers.sqlite import SqliteTier

__all__ = ["CacheHit", "RagCache"]

_log = logging.getLogger("rag_cache_plugin")


class RagCache(_AsyncOps):
    """A three-tier exact (and optionally semantic) cache.

    ``RagCache()`` reads its configuration from ``RAG_CACHE_*`` variables; pass a
    ``CacheConfig`` or keyword arguments of one to configure it in code.
    """

    def __init__(
        self,
        config: CacheConfig | None = None,
        /,
        *,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        if config is None:
            config = CacheConfig.from_env(**options)
        elif options:
            raise TypeError("pass either a CacheConfig or keyword options, not both")
        self.config = config
        self.bus = bus if bus is not None else EventBus()
        self.namespace = config.namespace
        self.default_ttl: float | None = config.ttl
        self.promote_to: tuple[str, ...] = config.promote_to
        self._clock = clock
        self._emit = self.bus.emit
        secret = config.key_secret.get_secret_value().encode() if config.key_secret else None
        self.keys = KeyMaker(secret)
        self.codec = Codec(
            [derive_key(k.get_secret_value()) for k in config.signing_keys],
            [derive_key(k.get_secret_value()) for k in config.encryption_keys],
            require_signature=config.require_signature,
            max_bytes=config.max_entry_bytes,
        )
        self._memo: dict[tuple[str, str, str, str], tuple[Ref, str]] = {}
        self.l1 = MemoryTier(
            max_entries=config.l1_max_entries,
            max_bytes=config.l1_max_bytes,
            policy=config.l1_policy,
            max_age=config.l1_ttl,
            emit=self._emit_if_active,
        )
        self.l2: SqliteTier | None = None
        self.l3: RedisTier | None = None
        self.breakers: dict[str, CircuitBreaker] = {}
        self._replay: deque[tuple[Tier, Callable[[], Any], str | None]] = deque()
        self._replay_keys: set[tuple[str, str]] = set()  # (tier, entry key) of queued repairs
        self._replay_lock = threading.Lock()
        sources: list[NewsSource] = []
        if config.sqlite_path is not None:
            from ._tiers.sqlite import SqliteTier

            try:
                self.l2 = SqliteTier(config.sqlite_path, codec=self.codec,
                                     max_bytes=config.l2_max_bytes,
                                     busy_timeout=config.sqlite_timeout,
                                     pragmas=config.sqlite_pragmas,
                                     emit=self._emit_if_active)
            except Exception as exc:  # an unusable file must not stop the application
                _log.error("rag-cache: L2 disabled: %s", exc)
                self._emit(TierFailed("", "", "l2", "open", str(exc)))
            else:
                self.breakers["l2"] = self._breaker("l2", 5, 1.0)
                sources.append(SqliteNews(self.l2))
        if config.redis is not None:
            from ._tiers.redis import RedisTier

            self.l3 = RedisTier(config.redis, codec=self.codec, keys=self.keys,
                                emit=self._emit_if_active)
            self.breakers["l3"] = self._breaker(
                "l3", config.redis.breaker_threshold, config.redis.breaker_reset)
            sources.append(RedisNews(self.l3))
        self.lower: tuple[Tier, ...] = tuple(t for t in (self.l2, self.l3) if t is not None)
        self.news = NewsFeed(uuid.uuid4().hex, sources, self._on_news,
                             interval=config.news_poll_interval,
                             on_error=self._news_failed, gate=self._allowed,
                             on_cycle=self._maintain, on_ok=self._news_ok)
        self.news.watch(_ALL)
        self.news.watch(self.namespace)
        self._watched = {self.namespace}
        self.semantic: SemanticLayer | None = None
        if config.semantic is not None:
            from ._semantic import SemanticMatcher

            self.semantic = SemanticMatcher(self, config.semantic)
        self.flights = FlightTable(self, config.single_flight_timeout)
        self._bypassing = 0  # contexts inside ``bypass()``: lookups check only while > 0
        self._bypass_lock = threading.Lock()
        self.news.start()

    # -- lookup -------------------------------------------------------------------

    @contextlib.contextmanager
    def bypass(self, keys: Iterable[str]) -> Iterator[None]:
        """Inside this block (and in tasks and threads started from it) ``lookup`` and
        ``alookup`` of these entry keys miss, so code that fills the cache itself (a
        chain over ``RagLLMCache``) recomputes them; every other caller still hits
        the current entries.  Warming's refresh-ahead uses it."""
        token = _BYPASSED.set(_BYPASSED.get() | frozenset(keys))
        with self._bypass_lock:
            self._bypassing += 1
        try:
            yield
        finally:
            with self._bypass_lock:
                self._bypassing -= 1
            _BYPASSED.reset(token)

    def lookup(self, question: str, *, context: Any = "", llm_string: str = "",
               namespace: str | None = None, single_flight: bool = False) -> CacheHit | None:
        """Find a cached answer: exact first (L1, L2, L3), then semantic.

        ``single_flight=True``: on a miss, wait (up to ``single_flight_timeout``) while
        another thread or task computes this answer; a None tells the caller to compute
        it and ``store`` it (or ``release`` the key if it cannot)."""
        started = perf_counter() if self.bus.active else 0.0
        try:
            ref, canonical = self._ref(question, context, llm_string, namespace)
        except _Oversize as exc:
            self._oversize(namespace, exc.args[0], "question")
            return None
        if self._bypassing and ref.key in _BYPASSED.get():
            self._miss(ref, started, question, "bypassed")
            return None
        entry = self.l1.find(ref.key, self._clock)
        if entry is not None:
            return self._l1_hit(entry, started, question)
        now = self._clock()
        for tier in self.lower:
            entry = self._tier_get(tier, ref, now)
            if entry is not None:
                self._promote(entry, tier.name, now)
                return self._hit(entry, tier.name, "exact", 1.0, None, started, question)
        if self.semantic is not None:
            hit = self.semantic.lookup(ref, question, canonical, now)
            if hit is not None:
                if self.bus.active:
                    self.bus.hit(ref.namespace, hit.key, hit.tier, "semantic",
                                 perf_counter() - started, hit.score, question,
                                 ref.partition)
                return hit
        if single_flight:
            hit = self.flights.follow(ref, question, started)
            if hit is not None:
                return hit
        self._miss(ref, started, question)
        return None

    def lookup_many(self, questions: Sequence[str], *, context: Any = "", llm_string: str = "",
                    namespace: str | None = None) -> list[CacheHit | None]:
        """Batch lookup: one round trip per lower tier for all L1 misses."""
        started = perf_counter()
        now = self._clock()
        out: list[CacheHit | None] = [None] * len(questions)
        refs: dict[int, tuple[Ref, str]] = {}
        for i, q in enumerate(questions):
            try:
                refs[i] = self._ref(q, context, llm_string, namespace)
            except _Oversize as exc:
                self._oversize(namespace, exc.args[0], "question")
        todo: list[int] = []
        for i, (ref, _) in refs.items():
            entry = self.l1.get(ref, now)
            if entry is None:
                todo.append(i)
            else:
                out[i] = self._l1_hit(entry, started, questions[i])
        for tier in self.lower:
            if not todo or not self.breakers[tier.name].allow():
                continue
            t = perf_counter()
            try:
                found = tier.get_many([refs[i][0] for i in todo], now)
            except Exception as exc:
                self._failed(tier, "get_many", exc, refs[todo[0]][0].namespace, t)
                continue
            self.breakers[tier.name].success()
            rest: list[int] = []
            for i in todo:
                entry = found.get(refs[i][0].key)
                if entry is None or self._repair_pending(tier, entry.key):
                    rest.append(i)
                else:
                    self._promote(entry, tier.name, now)
                    out[i] = self._hit(entry, tier.name, "exact", 1.0, None, started,
                                       questions[i])
            todo = rest
        for i in todo:
            ref, canonical = refs[i]
            if self.semantic is not None:
                out[i] = sem = self.semantic.lookup(ref, questions[i], canonical, now)
                if sem is not None and self.bus.active:
                    self.bus.hit(ref.namespace, sem.key, sem.tier, "semantic",
                                 perf_counter() - started, sem.score, questions[i],
                                 ref.partition)
            if out[i] is None:
                self._miss(ref, started, questions[i])
        return out

    # -- store --------------------------------------------------------------------

    def store(self, question: str, value: Any, *, context: Any = "", llm_string: str = "",
              namespace: str | None = None, ttl: float | None = None,
              tags: Iterable[str] | None = None) -> bool:
        """Cache ``value`` (JSON data) as the answer to ``question``.

        Returns False when a configured limit refused it (an event says which)."""
        started = perf_counter()
        try:
            ref, canonical = self._ref(question, context, llm_string, namespace)
        except _Oversize as exc:
            self._oversize(namespace, exc.args[0], "question")
            return False
        now = self._clock()
        entry = self._entry(ref, question, value, ttl, tags, now)
        if self.semantic is not None:
            entry.vector = self.semantic.vector_for(canonical, ref.namespace)
        if not self._finish_entry(entry):
            self.flights.release(ref)
            return False
        self.l1.set(entry, now)
        done: list[TierName] = ["l1"]
        for tier in self.lower:
            if self._tier_call(tier, "set", ref.namespace, partial(tier.set, entry, now),
                               partial(tier.delete, [ref]), ref.key) is not None:
                done.append(tier.name)
        self._stored(entry, done, started)
        self.flights.landed(ref)
        return True

    # -- removal ------------------------------------------------------------------

    def delete(self, question: str, *, context: Any = "", llm_string: str = "",
               namespace: str | None = None) -> None:
        """Remove one question's entry from every tier."""
        ref = self.ref(question, context=context, llm_string=llm_string, namespace=namespace)
        self.l1.delete([ref])
        for tier in self.lower:
            fn = partial(tier.delete, [ref])
            self._tier_call(tier, "delete", ref.namespace, fn, fn, ref.key)
        self._removed(ref.namespace, [ref.key], (), "del", {ref.key: ref.partition})

    def release(self, question: str, *, context: Any = "", llm_string: str = "",
                namespace: str | None = None) -> None:
        """Give up leading a ``single_flight`` miss (the answer could not be computed):
        waiting callers stop waiting and one of them leads instead."""
        try:
            ref = self._ref(question, context, llm_string, namespace)[0]
        except _Oversize:
            return  # such a question is never looked up, so never led
        self.flights.release(ref)

    def invalidate(self, *, tags: Iterable[str], namespace: str | None = None) -> int:
        """Drop every entry carrying any of ``tags`` from every tier (and from
        peers' L1 through the news feed).  Returns how many distinct entries went."""
        tags_t = _check_tags(tags)
        ns = self.namespace if namespace is None else _check_ns(namespace)
        parts = {r.key: r.partition for r in self.l1.invalidate(ns, tags_t)}
        for tier in self.lower:
            fn = partial(tier.invalidate, ns, tags_t)
            refs = self._tier_call(tier, "invalidate", ns, fn, fn)
            if isinstance(refs, list):
                parts.update((r.key, r.partition) for r in refs)
        self._removed(ns, sorted(parts), tags_t, "inv", parts)
        return len(parts)

    def clear(self, namespace: str | None = None) -> None:
        """Remove every entry (of one namespace, or of all) from every tier."""
        if namespace is not None:
            _check_ns(namespace)
        self.l1.clear(namespace)
        for tier in self.lower:
            fn = partial(tier.clear, namespace)
            self._tier_call(tier, "clear", namespace or "", fn, fn)
        self._cleared(namespace)

    # -- semantic feedback --------------------------------------------------------

    def feedback(self, hit: CacheHit, *, correct: bool) -> None:
        """Report whether a hit was right.  A wrong semantic hit tightens that
        partition's threshold; a wrong exact hit drops the entry."""
        if not isinstance(hit, CacheHit):
            raise ValueError("feedback needs the CacheHit a lookup returned")
        self._emit_if_active(FeedbackReported(hit.namespace, hit.key, bool(correct), hit.score,
                                              hit.kind, hit.partition))
        if self.semantic is not None:
            self.semantic.feedback(hit, correct)
        if not correct and hit.kind == "exact":
            ref = Ref(hit.key, hit.namespace, hit.partition)
            self.l1.delete([ref])
            for tier in self.lower:
                fn = partial(tier.delete, [ref])
                self._tier_call(tier, "delete", ref.namespace, fn, fn, ref.key)
            self._removed(ref.namespace, [ref.key], (), "del", {ref.key: ref.partition})

    # -- introspection ------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Sizes and states for analytics and the command line."""
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "l1_entries": len(self.l1),
            "l1_bytes": self.l1.bytes_used,
            "l1_max_entries": self.l1.max_entries,
            "l1_max_bytes": self.l1.max_bytes,
            "l1_policy": self.l1.policy.name,
            "default_ttl": self.default_ttl,
            "tiers": ["l1", *(t.name for t in self.lower)],
            "breakers": {k: b.state for k, b in self.breakers.items()},
        }
        if self.l2 is not None:
            try:
                out["l2_bytes"] = self.l2.total_bytes()
                out["l2_entries"] = self.l2.count()
            except Exception as exc:
                out["l2_error"] = str(exc)
        return out

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Stop the news thread and close every tier."""
        self.news.stop()
        if self.semantic is not None:
            self.semantic.close()
        for tier in self.lower:
            try:
                tier.close()
            except Exception:
                _log.debug("rag-cache: closing %s failed", tier.name, exc_info=True)
        self.l1.close()

    def __enter__(self) -> RagCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RagCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
