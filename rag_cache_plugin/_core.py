"""``RagCache``: lookup, store and invalidation across the tiers.

Read path: L1 -> L2 -> L3, first hit wins and is promoted upward with its
remaining TTL; on a miss with semantic matching on, the semantic layer searches
the partition.  Writes go to every tier.  A failing tier is a miss plus an event,
never an exception: every L2/L3 call sits behind a circuit breaker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._breaker import CircuitBreaker
from ._codec import Codec, derive_key, value_digest
from ._config import CacheConfig
from ._entry import Entry
from ._events import (
    BreakerChanged,
    Cleared,
    EventBus,
    FeedbackReported,
    Hit,
    Invalidated,
    MatchKind,
    Miss,
    Rejected,
    Stored,
    TierFailed,
    TierName,
)
from ._flight import FlightTable
from ._keys import KeyMaker, canonicalize
from ._news import NewsFeed, NewsSource, RedisNews, SqliteNews
from ._tiers import Ref, Tier
from ._tiers.memory import MemoryTier

if TYPE_CHECKING:
    from ._tiers.redis import RedisTier
    from ._tiers.sqlite import SqliteTier

__all__ = ["CacheHit", "RagCache"]

_log = logging.getLogger("rag_cache_plugin")

_MEMO_MAX = 16_384
_MEMO_MAX_CHARS = 65_536  # longer prompts are hashed each time rather than pinned in memory
_ALL = "*"  # news namespace for clears of every namespace
_REPLAY_MAX = 100_000  # deferred repairs kept during a long outage; the oldest go first
_MAX_TTL = 100 * 365 * 86_400.0  # Redis refuses expiry times far beyond this
# Keys whose lookups miss in this context (see ``RagCache.bypass``).
_BYPASSED: ContextVar[frozenset[str]] = ContextVar("rag_cache_bypassed", default=frozenset())


@dataclass(frozen=True, slots=True)
class CacheHit:
    """What a lookup found.  ``value`` is what was stored (JSON data; treat it as
    read-only: L1 hands out the same object to every caller)."""

    value: Any
    tier: TierName
    kind: MatchKind
    score: float
    key: str
    namespace: str
    partition: str
    question: str
    """The cached question (for a semantic hit, the one that matched)."""
    expires: float | None = None
    evidence: Mapping[str, Any] | None = None


# A frozen dataclass's __init__ pays object.__setattr__ per field, which was most of
# an L1 hit's cost; hits built by the core fill the slots directly (same class, same API).
(_s_value, _s_tier, _s_kind, _s_score, _s_key, _s_ns, _s_part, _s_question, _s_expires,
 _s_evidence) = (getattr(CacheHit, f).__set__ for f in CacheHit.__dataclass_fields__)


def _new_hit(value: Any, tier: TierName, kind: MatchKind, score: float, key: str, ns: str,
             partition: str, question: str, expires: float | None,
             evidence: Mapping[str, Any] | None) -> CacheHit:
    hit = object.__new__(CacheHit)
    _s_value(hit, value)
    _s_tier(hit, tier)
    _s_kind(hit, kind)
    _s_score(hit, score)
    _s_key(hit, key)
    _s_ns(hit, ns)
    _s_part(hit, partition)
    _s_question(hit, question)
    _s_expires(hit, expires)
    _s_evidence(hit, evidence)
    return hit


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


class _Oversize(Exception):
    pass


def _context_text(context: Any) -> str:
    if isinstance(context, str):
        return context
    try:
        return json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: too deep
        raise ValueError(f"context must be a string or JSON data: {exc!r}") from exc


def _is_text(value: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates).  Namespaces and tags are stored as
    text in SQLite and Redis: one that cannot be encoded would fail inside a tier,
    where it would count against the tier's breaker instead of naming the mistake."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_ns(ns: Any) -> str:
    if not isinstance(ns, str) or not ns or len(ns) > 256 or not _is_text(ns):
        raise ValueError("namespace must be a non-empty string of at most 256 characters "
                         "(valid Unicode, no lone surrogates)")
    return ns


def _check_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str | bytes):
        raise ValueError("tags must be a list of strings, not a single string")
    out = tuple(tags)
    if not all(isinstance(t, str) and _is_text(t) for t in out):
        raise ValueError("tags must be strings of valid Unicode (no lone surrogates)")
    return out


class RagCache:
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
                             on_cycle=self._replay_removals, on_ok=self._news_ok)
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

    def _news_ok(self, tier: str) -> None:
        b = self.breakers.get(tier)
        if b is not None:
            b.success()

    def _news_failed(self, tier: str, exc: Exception) -> None:
        b = self.breakers.get(tier)
        if b is not None:
            b.failure()
        self._emit_if_active(TierFailed("", "", tier, "news", str(exc)))  # type: ignore[arg-type]

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
            self._emit(Hit(entry.namespace, entry.key, tier, kind, perf_counter() - started,
                           score, question, entry.partition))
        return hit

    def _l1_hit(self, entry: Entry, started: float, question: str) -> CacheHit:
        hit: CacheHit | None = entry.hit
        if hit is None:
            hit = entry.hit = CacheHit(entry.value, "l1", "exact", 1.0, entry.key,
                                       entry.namespace, entry.partition, entry.question,
                                       entry.expires)
        if self.bus.active:
            self._emit(Hit(entry.namespace, entry.key, "l1", "exact", perf_counter() - started,
                           1.0, question, entry.partition))
        return hit

    def _miss(self, ref: Ref, started: float, question: str, reason: str = "absent") -> None:
        if self.bus.active:
            self._emit(Miss(ref.namespace, ref.key, perf_counter() - started, question,
                            reason, ref.partition))

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

    # -- tier calls behind breakers (sync) ------------------------------------------

    def _repair_pending(self, tier: Tier, key: str) -> bool:
        """A write or removal of ``key`` failed in ``tier`` and awaits its repair: the
        tier may still hold an older version, so it must not answer for that key."""
        return bool(self._replay_keys) and (tier.name, key) in self._replay_keys

    def _tier_get(self, tier: Tier, ref: Ref, now: float) -> Entry | None:
        # Pending repair first: allow() may hand out the half-open probe, which must
        # then be used.
        if self._repair_pending(tier, ref.key) or not self.breakers[tier.name].allow():
            return None
        t = perf_counter()
        try:
            entry = tier.get(ref, now)
        except Exception as exc:  # never into the caller's chain
            self._failed(tier, "get", exc, ref.namespace, t)
            return None
        self.breakers[tier.name].success()
        return entry

    def _tier_call(self, tier: Tier, op: str, ns: str, fn: Callable[[], Any],
                   replay: Callable[[], Any] | None = None,
                   replay_key: str | None = None) -> Any:
        """Run a write-side tier call; None (and an event) when it fails.  A failed
        removal is kept in ``replay`` order and retried once the tier is back, so an
        outage never lets an invalidated entry come back from a shared tier.  A failed
        write replays as a removal of that key (``replay_key`` folds repeats): the tier
        may still hold an older version, which must not be served after the outage."""
        if not self.breakers[tier.name].allow():
            self._emit_if_active(TierFailed(ns, "", tier.name, op, "circuit open"))
            self._defer(tier, replay, replay_key)
            return None
        t = perf_counter()
        try:
            out = fn()
        except Exception as exc:
            self._failed(tier, op, exc, ns, t)
            self._defer(tier, replay, replay_key)
            return None
        self.breakers[tier.name].success()
        return True if out is None else out

    def _defer(self, tier: Tier, replay: Callable[[], Any] | None,
               key: str | None = None) -> None:
        if replay is None:
            return
        with self._replay_lock:
            if key is not None:
                if (tier.name, key) in self._replay_keys:
                    return
                self._replay_keys.add((tier.name, key))
            if len(self._replay) >= _REPLAY_MAX:
                # Memory stays bounded in a long outage; TTLs bound what this forgets.
                old_tier, _fn, old_key = self._replay.popleft()
                if old_key is not None:
                    self._replay_keys.discard((old_tier.name, old_key))
                _log.warning("rag-cache: more than %d repairs pending; dropped the oldest",
                             _REPLAY_MAX)
            self._replay.append((tier, replay, key))

    def _replay_removals(self) -> None:
        """Retry removals that failed during an outage (the news thread calls this)."""
        while self._replay:
            with self._replay_lock:
                tier, fn, _key = self._replay[0]
            if not self.breakers[tier.name].allow():
                return
            try:
                fn()
            except Exception:
                self.breakers[tier.name].failure()
                return
            self.breakers[tier.name].success()
            with self._replay_lock:
                if self._replay and self._replay[0][1] is fn:
                    _t, _f, key = self._replay.popleft()
                    if key is not None:
                        self._replay_keys.discard((tier.name, key))

    def _promote(self, entry: Entry, source: TierName, now: float) -> None:
        # newer_only / replace=False: a concurrent store of a newer version wins.
        if "l1" in self.promote_to:
            self.l1.set(entry, now, newer_only=True)
        if source == "l3" and self.l2 is not None and "l2" in self.promote_to:
            self._tier_call(self.l2, "promote", entry.namespace,
                            partial(self.l2.set, entry, now, replace=False))

    # -- lookup -------------------------------------------------------------------

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
                    self._emit(Hit(ref.namespace, hit.key, hit.tier, "semantic",
                                   perf_counter() - started, hit.score, question, ref.partition))
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
                out[i] = self.semantic.lookup(ref, questions[i], canonical, now)
            if out[i] is None:
                self._miss(ref, started, questions[i])
        return out

    # -- store --------------------------------------------------------------------

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

    def _stored(self, entry: Entry, done: list[TierName], started: float) -> None:
        body: dict[str, Any] = {"key": entry.key, "at": entry.created}
        if self.semantic is not None:
            self.semantic.added(entry)
            body.update(self.semantic.news_fields(entry))  # peers index it without a read
        self.news.publish(entry.namespace, "put", body)
        if self.bus.active:
            self._emit(Stored(entry.namespace, entry.key, tuple(done), entry.size,
                              perf_counter() - started, entry.question, entry.partition,
                              entry.expires, value_digest(entry.value)))

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

    def _removed(self, ns: str, keys: list[str], tags: tuple[str, ...], kind: str,
                 partitions: Mapping[str, str] | None = None) -> None:
        if self.semantic is not None:
            self.semantic.removed(keys, ns, partitions)
        self.news.publish(ns, kind, {"keys": keys, "tags": list(tags)})
        if kind == "inv":
            self._emit_if_active(Invalidated(ns, "", tags, len(keys)))

    def clear(self, namespace: str | None = None) -> None:
        """Remove every entry (of one namespace, or of all) from every tier."""
        if namespace is not None:
            _check_ns(namespace)
        self.l1.clear(namespace)
        for tier in self.lower:
            fn = partial(tier.clear, namespace)
            self._tier_call(tier, "clear", namespace or "", fn, fn)
        self._cleared(namespace)

    def _cleared(self, namespace: str | None) -> None:
        if self.semantic is not None:
            self.semantic.cleared(namespace)
        self.news.publish(_ALL if namespace is None else namespace, "clear",
                          {"ns": namespace})
        self._emit_if_active(Cleared(namespace or "", ""))

    # -- news from peers ----------------------------------------------------------

    def _on_news(self, source: str, batch: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Apply peers' changes to this process's L1 and semantic index, and, when
        the news came through Redis, to this host's own L2 file (a peer on another
        host has another file; the same file's news arrives through L2 and needs
        nothing)."""
        l2_removals: list[tuple[str, float | None]] = []
        l2_invalidations: list[tuple[str, list[str]]] = []
        l2_clears: list[str | None] = []
        for ns, kind, body in batch:
            if kind in ("put", "del", "inv"):
                keys = [k for k in body.get("keys") or [body.get("key")] if isinstance(k, str)]
                self.l1.discard(keys)
                tags = [t for t in body.get("tags") or [] if isinstance(t, str)]
                if kind == "inv":
                    self.l1.invalidate(ns, tags)
                    l2_invalidations.append((ns, tags))
                if kind != "put" and self.semantic is not None:
                    self.semantic.removed(keys)
                # A peer's newer answer replaces only older copies here.
                at = body.get("at") if kind == "put" else None
                l2_removals.extend((k, at if isinstance(at, int | float) else None) for k in keys)
            elif kind == "clear":
                target = body.get("ns")
                self.l1.clear(target)
                l2_clears.append(target)
                if self.semantic is not None:
                    self.semantic.cleared(target)
            if self.semantic is not None and hasattr(self.semantic, "on_news"):
                self.semantic.on_news(ns, kind, body)
        if source == "l3" and self.l2 is not None and (l2_removals or l2_invalidations
                                                      or l2_clears):
            l2 = self.l2
            self._tier_call(l2, "news", "", partial(
                l2.apply_peer_news, l2_removals, l2_invalidations, l2_clears))

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

    # -- async twins ----------------------------------------------------------------

    async def _atier_get(self, tier: Tier, ref: Ref, now: float) -> Entry | None:
        # Pending repair first: allow() may hand out the half-open probe, which must
        # then be used.
        if self._repair_pending(tier, ref.key) or not self.breakers[tier.name].allow():
            return None
        t = perf_counter()
        try:
            entry = await tier.aget(ref, now)
        except Exception as exc:
            self._failed(tier, "get", exc, ref.namespace, t)
            return None
        except BaseException:  # cancelled (an application timeout): free the probe
            self.breakers[tier.name].release()
            raise
        self.breakers[tier.name].success()
        return entry

    async def _atier_call(self, tier: Tier, op: str, ns: str, coro_fn: Callable[[], Any],
                          replay: Callable[[], Any] | None = None,
                          replay_key: str | None = None) -> Any:
        if not self.breakers[tier.name].allow():
            self._emit_if_active(TierFailed(ns, "", tier.name, op, "circuit open"))
            self._defer(tier, replay, replay_key)
            return None
        t = perf_counter()
        try:
            out = await coro_fn()
        except Exception as exc:
            self._failed(tier, op, exc, ns, t)
            self._defer(tier, replay, replay_key)
            return None
        except BaseException:  # cancelled: free the probe; the write may not have landed
            self.breakers[tier.name].release()
            self._defer(tier, replay, replay_key)
            raise
        self.breakers[tier.name].success()
        return True if out is None else out

    async def _apromote(self, entry: Entry, source: TierName, now: float) -> None:
        if "l1" in self.promote_to:
            self.l1.set(entry, now, newer_only=True)
        if source == "l3" and self.l2 is not None and "l2" in self.promote_to:
            l2 = self.l2
            await self._atier_call(l2, "promote", entry.namespace,
                                   partial(l2.aset, entry, now, replace=False))

    async def alookup(self, question: str, *, context: Any = "", llm_string: str = "",
                      namespace: str | None = None,
                      single_flight: bool = False) -> CacheHit | None:
        """Async ``lookup``."""
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
            entry = await self._atier_get(tier, ref, now)
            if entry is not None:
                await self._apromote(entry, tier.name, now)
                return self._hit(entry, tier.name, "exact", 1.0, None, started, question)
        if self.semantic is not None:
            hit = await self.semantic.alookup(ref, question, canonical, now)
            if hit is not None:
                if self.bus.active:
                    self._emit(Hit(ref.namespace, hit.key, hit.tier, "semantic",
                                   perf_counter() - started, hit.score, question, ref.partition))
                return hit
        if single_flight:
            hit = await self.flights.afollow(ref, question, started)
            if hit is not None:
                return hit
        self._miss(ref, started, question)
        return None

    async def alookup_many(self, questions: Sequence[str], *, context: Any = "",
                           llm_string: str = "",
                           namespace: str | None = None) -> list[CacheHit | None]:
        """Async ``lookup_many``: one pipelined round trip per lower tier."""
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
                found = await tier.aget_many([refs[i][0] for i in todo], now)
            except Exception as exc:
                self._failed(tier, "get_many", exc, refs[todo[0]][0].namespace, t)
                continue
            except BaseException:  # cancelled: free the probe
                self.breakers[tier.name].release()
                raise
            self.breakers[tier.name].success()
            rest: list[int] = []
            for i in todo:
                entry = found.get(refs[i][0].key)
                if entry is None or self._repair_pending(tier, entry.key):
                    rest.append(i)
                else:
                    await self._apromote(entry, tier.name, now)
                    out[i] = self._hit(entry, tier.name, "exact", 1.0, None, started,
                                       questions[i])
            todo = rest
        for i in todo:
            ref, canonical = refs[i]
            if self.semantic is not None:
                out[i] = await self.semantic.alookup(ref, questions[i], canonical, now)
            if out[i] is None:
                self._miss(ref, started, questions[i])
        return out

    async def astore(self, question: str, value: Any, *, context: Any = "",
                     llm_string: str = "", namespace: str | None = None,
                     ttl: float | None = None, tags: Iterable[str] | None = None) -> bool:
        """Async ``store``."""
        started = perf_counter()
        try:
            ref, canonical = self._ref(question, context, llm_string, namespace)
        except _Oversize as exc:
            self._oversize(namespace, exc.args[0], "question")
            return False
        now = self._clock()
        entry = self._entry(ref, question, value, ttl, tags, now)
        if self.semantic is not None:
            entry.vector = await self.semantic.avector_for(canonical, ref.namespace)
        if not self._finish_entry(entry):
            await self.flights.arelease(ref)
            return False
        self.l1.set(entry, now)
        done: list[TierName] = ["l1"]
        for tier in self.lower:
            if await self._atier_call(tier, "set", ref.namespace,
                                      partial(tier.aset, entry, now),
                                      partial(tier.delete, [ref]), ref.key) is not None:
                done.append(tier.name)
        self._stored(entry, done, started)
        await self.flights.alanded(ref)
        return True

    async def adelete(self, question: str, *, context: Any = "", llm_string: str = "",
                      namespace: str | None = None) -> None:
        """Async ``delete``."""
        ref = self.ref(question, context=context, llm_string=llm_string, namespace=namespace)
        self.l1.delete([ref])
        for tier in self.lower:
            await self._atier_call(tier, "delete", ref.namespace, partial(tier.adelete, [ref]),
                                   partial(tier.delete, [ref]), ref.key)
        self._removed(ref.namespace, [ref.key], (), "del", {ref.key: ref.partition})

    async def arelease(self, question: str, *, context: Any = "", llm_string: str = "",
                       namespace: str | None = None) -> None:
        """Async ``release``."""
        try:
            ref = self._ref(question, context, llm_string, namespace)[0]
        except _Oversize:
            return
        await self.flights.arelease(ref)

    async def ainvalidate(self, *, tags: Iterable[str], namespace: str | None = None) -> int:
        """Async ``invalidate``."""
        tags_t = _check_tags(tags)
        ns = self.namespace if namespace is None else _check_ns(namespace)
        parts = {r.key: r.partition for r in self.l1.invalidate(ns, tags_t)}
        for tier in self.lower:
            refs = await self._atier_call(tier, "invalidate", ns,
                                          partial(tier.ainvalidate, ns, tags_t),
                                          partial(tier.invalidate, ns, tags_t))
            if isinstance(refs, list):
                parts.update((r.key, r.partition) for r in refs)
        self._removed(ns, sorted(parts), tags_t, "inv", parts)
        return len(parts)

    async def aclear(self, namespace: str | None = None) -> None:
        """Async ``clear``."""
        if namespace is not None:
            _check_ns(namespace)
        self.l1.clear(namespace)
        for tier in self.lower:
            await self._atier_call(tier, "clear", namespace or "", partial(tier.aclear, namespace),
                                   partial(tier.clear, namespace))
        self._cleared(namespace)

    async def aclose(self) -> None:
        """Async ``close``: also closes this event loop's async connections."""
        self.news.stop()
        for tier in self.lower:
            try:
                await tier.aclose()
            except Exception:
                _log.debug("rag-cache: closing %s failed", tier.name, exc_info=True)
        self.close()
