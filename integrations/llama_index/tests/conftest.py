"""Fixtures of the LlamaIndex integration tests (helpers live in ``li_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from li_support import MiniLMEmbedding, ScriptedLLM, documents
from llama_index.core import VectorStoreIndex
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever

# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embed_model() -> MiniLMEmbedding:
    return MiniLMEmbedding()


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def index(embed_model: MiniLMEmbedding) -> VectorStoreIndex:
    idx = VectorStoreIndex.from_documents(documents(), embed_model=embed_model)
    idx.set_index_id("capitals")
    return idx


class RetrievalCounter:
    """Counts real vector-store retrievals (the work a cache hit must skip)."""

    def __init__(self) -> None:
        self.calls = 0


@pytest.fixture
def retrievals(monkeypatch: pytest.MonkeyPatch) -> Iterator[RetrievalCounter]:
    counter = RetrievalCounter()
    sync = VectorIndexRetriever._get_nodes_with_embeddings
    asyn = VectorIndexRetriever._aget_nodes_with_embeddings

    def counted(self: VectorIndexRetriever, *a: Any, **k: Any) -> Any:
        counter.calls += 1
        return sync(self, *a, **k)

    async def acounted(self: VectorIndexRetriever, *a: Any, **k: Any) -> Any:
        counter.calls += 1
        return await asyn(self, *a, **k)

    monkeypatch.setattr(VectorIndexRetriever, "_get_nodes_with_embeddings", counted)
    monkeypatch.setattr(VectorIndexRetriever, "_aget_nodes_with_embeddings", acounted)
    yield counter
