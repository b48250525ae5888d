"""Shared pieces of the analytics tests: a stand-in semantic layer (the core calls
it on an exact miss, exactly as it calls the real one) and a known workload."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rag_cache_plugin import CacheHit, CallCompleted, RagCache
from rag_cache_plugin._entry import Entry
from rag_cache_plugin._tiers import Ref


class AliasSemantic:
    """Answers listed paraphrases with the cached entry of their original question."""

    def __init__(self, cache: RagCache, aliases: dict[str, str]) -> None:
        self.cache = cache
        self.aliases = aliases
        self.feedbacks: list[tuple[CacheHit, bool]] = []

    def vector_for(self, canonical: str, namespace: str) -> bytes | None:
        return None

    async def avector_for(self, canonical: str, namespace: str) -> bytes | None:
        return None

    def lookup(self, ref: Ref, question: str, canonical: str, now: float) -> CacheHit | None:
        original = self.aliases.get(question)
        if original is None:
            return None
        target = self.cache.ref(original, namespace=ref.namespace)
        for tier in (self.cache.l1, *self.cache.lower):
            entry = tier.get(target, now)
            if entry is not None:
                return CacheHit(entry.value, tier.name, "semantic", 0.93, entry.key,
                                entry.namespace, entry.partition, entry.question)
        return None

    async def alookup(self, ref: Ref, question: str, canonical: str,
                      now: float) -> CacheHit | None:
        return self.lookup(ref, question, canonical, now)

    def news_fields(self, entry: Entry) -> dict[str, object]:
        return {}

    def added(self, entry: Entry) -> None:
        pass

    def removed(self, keys: Iterable[str]) -> None:
        pass

    def cleared(self, namespace: str | None) -> None:
        pass

    def feedback(self, hit: CacheHit, correct: bool) -> None:
        self.feedbacks.append((hit, correct))

    def close(self) -> None:
        pass


def compute(cache: RagCache, question: str, answer: Any, *, model: str, input_tokens: int,
            output_tokens: int, latency: float, op: str = "chat") -> None:
    """What a framework handler and the LLM cache do on a miss: the model call is
    reported, then its answer is stored."""
    assert cache.lookup(question) is None
    cache.bus.emit(CallCompleted(cache.namespace, "", op, latency, model=model,  # type: ignore[arg-type]
                                 input_tokens=input_tokens, output_tokens=output_tokens,
                                 question=question, source="langchain"))
    assert cache.store(question, answer)
