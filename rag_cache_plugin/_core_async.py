"""``_AsyncOps``: the async twins of ``RagCache``'s operations (a base of ``RagCache``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ._core_base import _BYPASSED
from ._core_checks import _check_ns, _check_tags, _Oversize
from ._core_hit import CacheHit
from ._core_news import _PeerNews
from ._events import TierName
from ._tiers import Ref

_log = logging.getLogger("rag_cache_plugin")


class _AsyncOps(_PeerNews):
    """``alookup``, ``astore``, ``aclose`` and the rest."""

    if TYPE_CHECKING:
        def close(self) -> None: ...  # RagCache's

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
                    self.bus.hit(ref.namespace, hit.key, hit.tier, "semantic",
                                 perf_counter() - started, hit.score, question,
                                 ref.partition)
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
                out[i] = sem = await self.semantic.alookup(ref, questions[i], canonical, now)
                if sem is not None and self.bus.active:
                    self.bus.hit(ref.namespace, sem.key, sem.tier, "semantic",
                                 perf_counter() - started, sem.score, questions[i],
                                 ref.partition)
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
