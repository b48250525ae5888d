"""A miss embeds the question once: the semantic layer's vector is handed to the
wrapped vector retriever through ``QueryBundle.embedding``.

The semantic layer is stood in for by a minimal object with the same interface
(plus ``shared_query_vector``), so this runs without it.
"""

from __future__ import annotations

from typing import Any

from li_support import MiniLMEmbedding
from llama_index.core import VectorStoreIndex
from llama_index_rag_cache import CachedRetriever

from rag_cache_plugin import CacheConfig, RagCache


class FakeSemantic:
    """Embeds every looked-up question, as the semantic layer does on an exact miss."""

    def __init__(self, embedder: MiniLMEmbedding) -> None:
        self.embedder = embedder
        self.memo: dict[str, list[float]] = {}
        self.shared = 0

    def lookup(self, ref: Any, question: str, canonical: str, now: float) -> None:
        self.memo[question] = self.embedder.get_query_embedding(question)

    async def alookup(self, ref: Any, question: str, canonical: str, now: float) -> None:
        self.lookup(ref, question, canonical, now)

    def shared_query_vector(self, text: str, embed_model: object) -> list[float] | None:
        if embed_model is not self.embedder:
            return None
        self.shared += 1
        return self.memo.get(text)

    def vector_for(self, canonical: str, namespace: str) -> None:
        return None

    async def avector_for(self, canonical: str, namespace: str) -> None:
        return None

    def added(self, entry: Any) -> None: ...
    def removed(self, keys: Any) -> None: ...
    def cleared(self, namespace: Any) -> None: ...
    def feedback(self, hit: Any, correct: bool) -> None: ...
    def close(self) -> None: ...


def test_miss_embeds_the_question_once(index: VectorStoreIndex,
                                       embed_model: MiniLMEmbedding) -> None:
    question = "Which river flows through Berlin?"
    expected = index.as_retriever().retrieve(question)
    with RagCache(CacheConfig()) as cache:
        fake = FakeSemantic(embed_model)
        cache.semantic = fake  # type: ignore[assignment]
        retriever = CachedRetriever(index.as_retriever(), cache)
        before = embed_model.calls
        assert retriever.retrieve(question) == expected
        assert embed_model.calls == before + 1 and fake.shared == 1


async def test_async_miss_embeds_the_question_once(index: VectorStoreIndex,
                                                   embed_model: MiniLMEmbedding) -> None:
    question = "Which river flows through Lima?"
    expected = await index.as_retriever().aretrieve(question)
    with RagCache(CacheConfig()) as cache:
        fake = FakeSemantic(embed_model)
        cache.semantic = fake  # type: ignore[assignment]
        retriever = CachedRetriever(index.as_retriever(), cache)
        before = embed_model.calls
        assert await retriever.aretrieve(question) == expected
        assert embed_model.calls == before + 1


def test_other_embedding_model_is_not_reused(index: VectorStoreIndex,
                                             embed_model: MiniLMEmbedding) -> None:
    with RagCache(CacheConfig()) as cache:
        fake = FakeSemantic(MiniLMEmbedding())  # same weights, another object: no reuse
        cache.semantic = fake  # type: ignore[assignment]
        before = embed_model.calls
        CachedRetriever(index.as_retriever(), cache).retrieve("Where is Tokyo?")
        assert embed_model.calls == before + 1  # the retriever embedded by itself
        assert fake.shared == 0
