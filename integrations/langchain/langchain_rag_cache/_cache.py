"""``RagLLMCache``: LangChain's ``BaseCache`` over a ``RagCache``."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.outputs import Generation

from rag_cache_plugin import CacheConfig, CacheHit, Corrupt, EventBus, RagCache, Rejected

from ._generations import MARK, BadPayload, Template, Unsupported, decode, encode
from ._prompt import PromptMemo

__all__ = ["RagLLMCache"]

_TEMPLATES_MAX = 4096
_SERVED_MAX = 4096  # recent hits an answer can still be reported against


def _mark_of(answer: Any) -> dict[str, Any] | None:
    """The ``rag_cache`` mark of a message, a generation or the mark itself."""
    if isinstance(answer, dict):
        return answer.get(MARK, answer)  # type: ignore[no-any-return]
    for holder in (getattr(answer, "message", None), answer):
        meta = getattr(holder, "response_metadata", None)
        if isinstance(meta, dict) and isinstance(meta.get(MARK), dict):
            return meta[MARK]  # type: ignore[no-any-return]
    info = getattr(answer, "generation_info", None)
    if isinstance(info, dict) and isinstance(info.get(MARK), dict):
        return info[MARK]  # type: ignore[no-any-return]
    return None


class RagLLMCache(BaseCache):
    """A LangChain LLM cache backed by a three-tier ``RagCache``.

    ``RagLLMCache()`` configures itself from ``RAG_CACHE_*`` variables; pass a
    ``RagCache``, a ``CacheConfig`` or keyword arguments of one
    (``RagLLMCache(sqlite_path="cache.db")``).  Chat prompts are split into the question
    (the last human message) and its context; ``llm_string`` joins the context in the
    partition, so models, settings and bound tools never share answers.

    Returned generations carry ``{"rag_cache": {"tier", "kind", "score", "id"}}`` in
    ``message.response_metadata`` (chat models) and, with ``mark_text=True``, in
    ``generation_info`` of plain ``Generation``s.  Concurrent identical misses call the
    model once (``single_flight``; the wait is ``CacheConfig.single_flight_timeout``).
    """

    def __init__(
        self,
        cache: RagCache | CacheConfig | None = None,
        /,
        *,
        namespace: str | None = None,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        single_flight: bool = True,
        mark: bool = True,
        mark_text: bool = False,
        **options: Any,
    ) -> None:
        if options and cache is not None:
            raise TypeError("pass either a RagCache/CacheConfig or keyword options, not both")
        if isinstance(cache, RagCache):
            self.cache, self._owned = cache, False
        elif isinstance(cache, CacheConfig):
            self.cache, self._owned = RagCache(cache), True
        elif cache is None:
            self.cache, self._owned = RagCache(**options), True
        else:
            raise TypeError(f"expected a RagCache or CacheConfig, not {type(cache).__name__}")
        # Misconfiguration fails here, not later inside somebody's chain.
        tag_list = () if isinstance(tags, str) else tuple(tags)
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tag_list):
            raise ValueError("tags must be a list of strings")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or not ttl > 0):
            raise ValueError("ttl must be a positive number of seconds or None")
        if namespace is not None and not (isinstance(namespace, str) and 0 < len(namespace) <= 256):
            raise ValueError("namespace must be a non-empty string of at most 256 characters")
        self.namespace = namespace if namespace is not None else self.cache.namespace
        self.ttl = ttl
        self.tags = tag_list
        self.single_flight = single_flight
        self.mark = mark
        self.mark_text = mark_text
        self._memo = PromptMemo()
        self._templates: dict[str, Template] = {}
        self._ids = itertools.count(1)
        self._served: OrderedDict[str, CacheHit] = OrderedDict()

    @property
    def bus(self) -> EventBus:
        """The cache's event bus (so handlers can take this object as their target)."""
        return self.cache.bus

    # -- helpers --------------------------------------------------------------------

    def _result(self, hit: CacheHit) -> list[Generation] | None:
        t = self._templates.get(hit.key)
        if t is None or (t.value is not hit.value and t.value != hit.value):
            # A new entry, or a new version of it: validate once.  A copy read again from
            # L2 or L3 compares equal (in C, a microsecond) and reuses the template.
            t = Template(hit.value, decode(hit.value))
            if len(self._templates) >= _TEMPLATES_MAX:
                self._templates.clear()
            self._templates[hit.key] = t
        mark = None
        if self.mark:
            # The id lets a user report this answer back (``feedback``).
            hit_id = f"{next(self._ids):x}"
            self._served[hit_id] = hit
            if len(self._served) > _SERVED_MAX:
                self._served.popitem(last=False)
            mark = {"tier": hit.tier, "kind": hit.kind, "score": hit.score, "id": hit_id}
        return t.make(mark, self.mark_text)

    def _corrupt(self, hit: CacheHit, exc: BadPayload) -> None:
        self._templates.pop(hit.key, None)
        bus = self.cache.bus
        if bus.active:
            bus.emit(Corrupt(hit.namespace, hit.key, hit.tier, f"langchain payload: {exc}"))

    def _rejected(self, reason: str) -> None:
        bus = self.cache.bus
        if bus.active:
            bus.emit(Rejected(self.namespace, "", reason))

    # -- feedback -------------------------------------------------------------------

    def feedback(self, answer: Any, *, correct: bool) -> None:
        """Report whether an answer this cache served was right.  ``answer`` is what the
        model call returned (an ``AIMessage``, a ``ChatGeneration`` or ``Generation``,
        or its ``rag_cache`` mark).  A wrong semantic hit tightens that partition's
        threshold and blocks the pair; a wrong exact hit drops the entry."""
        mark = _mark_of(answer)
        hit = self._served.get(str(mark.get("id"))) if mark is not None else None
        if hit is None:
            raise ValueError("not an answer this cache served, or too long ago to report")
        self.cache.feedback(hit, correct=correct)

    # -- BaseCache ------------------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Cached generations for ``prompt`` under ``llm_string``, or None."""
        question, context, llm = self._memo.get(prompt, llm_string)
        hit = self.cache.lookup(question, context=context, llm_string=llm,
                                namespace=self.namespace, single_flight=self.single_flight)
        if hit is None:
            return None
        try:
            return self._result(hit)
        except BadPayload as exc:
            self._corrupt(hit, exc)
            # hit.question is the stored (canonical) question: this deletes that entry,
            # also when the hit was semantic.
            self.cache.delete(hit.question, context=context, llm_string=llm,
                              namespace=self.namespace)
            return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store ``return_val`` (every generation) for ``prompt`` under ``llm_string``."""
        question, context, llm = self._memo.get(prompt, llm_string)
        try:
            value = encode(return_val)
            stored = self.cache.store(question, value, context=context, llm_string=llm,
                                      namespace=self.namespace, ttl=self.ttl, tags=self.tags)
        except (Unsupported, ValueError) as exc:
            self._rejected(f"langchain generations not cached: {exc}")
            stored = False
        if not stored:
            # Nothing will land for this key: let callers waiting on it go ahead.
            self.cache.release(question, context=context, llm_string=llm,
                               namespace=self.namespace)

    def clear(self, **kwargs: Any) -> None:
        """Remove this cache's entries (its namespace, or ``namespace=...``) everywhere."""
        self.cache.clear(kwargs.get("namespace", self.namespace))
        self._templates.clear()

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async ``lookup`` (no executor hop)."""
        question, context, llm = self._memo.get(prompt, llm_string)
        hit = await self.cache.alookup(question, context=context, llm_string=llm,
                                       namespace=self.namespace,
                                       single_flight=self.single_flight)
        if hit is None:
            return None
        try:
            return self._result(hit)
        except BadPayload as exc:
            self._corrupt(hit, exc)
            await self.cache.adelete(hit.question, context=context, llm_string=llm,
                                     namespace=self.namespace)
            return None

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Async ``update``."""
        question, context, llm = self._memo.get(prompt, llm_string)
        try:
            value = encode(return_val)
            stored = await self.cache.astore(question, value, context=context, llm_string=llm,
                                             namespace=self.namespace, ttl=self.ttl,
                                             tags=self.tags)
        except (Unsupported, ValueError) as exc:
            self._rejected(f"langchain generations not cached: {exc}")
            stored = False
        if not stored:
            await self.cache.arelease(question, context=context, llm_string=llm,
                                      namespace=self.namespace)

    async def aclear(self, **kwargs: Any) -> None:
        """Async ``clear``."""
        await self.cache.aclear(kwargs.get("namespace", self.namespace))
        self._templates.clear()

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the ``RagCache`` if this object created it."""
        if self._owned:
            self.cache.close()

    async def aclose(self) -> None:
        if self._owned:
            await self.cache.aclose()

    def __enter__(self) -> RagLLMCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RagLLMCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RagLLMCache(namespace={self.namespace!r}, tiers={self._tiers()})"

    def _tiers(self) -> Sequence[str]:
        return ["l1", *(t.name for t in self.cache.lower)]
