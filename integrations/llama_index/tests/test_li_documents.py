"""Document-aware invalidation: a changed document drops exactly the entries built
from it, through the index's refresh / update / delete and an ingestion pipeline's
upserts; entries built from other documents survive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from li_support import MiniLMEmbedding, ScriptedLLM, TextVectorStore, documents
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index_rag_cache import CachedQueryEngine, CachedRetriever, watch_documents

from rag_cache_plugin import CacheConfig, Invalidated, RagCache

Q_FR = "What is the capital of France?"
Q_DE = "What is the capital of Germany?"
NEW_FR = "Lyon is the capital of France. The Rhone flows through Lyon."


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[RagCache]:
    with RagCache(CacheConfig(sqlite_path=tmp_path / "l2.db")) as c:
        yield c


def _engine(index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache) -> CachedQueryEngine:
    # top_k=1: each answer depends on one document only.
    return CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=1), cache)


def test_refresh_ref_docs_invalidates_only_the_changed_document(
        index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache) -> None:
    engine = _engine(index, llm, cache)
    retriever = CachedRetriever(index.as_retriever(similarity_top_k=1), cache)
    assert "Paris" in str(engine.query(Q_FR))
    engine.query(Q_DE)
    retriever.retrieve(Q_FR)
    retriever.retrieve(Q_DE)
    seen: list[Invalidated] = []
    cache.bus.subscribe(seen.append, (Invalidated,))  # type: ignore[arg-type]

    with watch_documents(cache, index=index):
        changed = index.refresh_ref_docs(documents(fr=NEW_FR))
    assert changed == [True, False, False, False]
    assert len(seen) == 1 and seen[0].count == 2  # the answer and the retrieval about France
    assert "fr" in seen[0].tags

    # as_retriever() pins the index's node ids, so engines are made again after a
    # change; the identity (and the surviving entries) stay the same.
    engine2 = _engine(index, llm, cache)
    assert engine2.cache_id == engine.cache_id
    calls = llm.calls
    assert "Berlin" in str(engine2.query(Q_DE)) and llm.calls == calls  # survived
    fresh = engine2.query(Q_FR)
    assert "Lyon" in str(fresh) and "Paris" not in str(fresh) and llm.calls == calls + 1
    assert "Lyon" in str(engine2.query(Q_FR)) and llm.calls == calls + 1  # cached again


def test_hooks_are_removed_on_close(index: VectorStoreIndex, llm: ScriptedLLM,
                                    cache: RagCache) -> None:
    engine = _engine(index, llm, cache)
    engine.query(Q_FR)
    watch = watch_documents(cache, index=index)
    assert "refresh_ref_docs" in vars(index)
    watch.close()
    assert "refresh_ref_docs" not in vars(index) and "delete_ref_doc" not in vars(index)
    index.refresh_ref_docs(documents(fr=NEW_FR))
    _engine(index, llm, cache).query(Q_FR)
    assert llm.calls == 1  # not watched: the stale entry stays


def test_delete_and_update_ref_doc(index: VectorStoreIndex, llm: ScriptedLLM,
                                   cache: RagCache) -> None:
    engine = _engine(index, llm, cache)
    engine.query(Q_FR)
    engine.query(Q_DE)
    with watch_documents(cache, index=index):
        index.update_ref_doc(Document(text=NEW_FR, id_="fr", metadata={"country": "fr"}))
        assert "Lyon" in str(_engine(index, llm, cache).query(Q_FR))
        index.delete_ref_doc("de", delete_from_docstore=True)
    assert llm.calls == 3
    answer = _engine(index, llm, cache).query(Q_DE)
    assert llm.calls == 4 and "Berlin" not in str(answer)


async def test_async_refresh(index: VectorStoreIndex, llm: ScriptedLLM,
                             cache: RagCache) -> None:
    engine = _engine(index, llm, cache)
    await engine.aquery(Q_FR)
    await engine.aquery(Q_DE)
    with watch_documents(cache, index=index):
        await index.arefresh_ref_docs(documents(fr=NEW_FR))
    engine = _engine(index, llm, cache)
    assert "Lyon" in str(await engine.aquery(Q_FR))
    await engine.aquery(Q_DE)
    assert llm.calls == 3


def test_new_documents_keep_entries_unless_asked(
        index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache) -> None:
    _engine(index, llm, cache).query(Q_FR)
    rome = Document(text="Rome is the capital of Italy.", id_="it")
    with watch_documents(cache, index=index):
        index.insert(rome)
    _engine(index, llm, cache).query(Q_FR)
    assert llm.calls == 1
    with watch_documents(cache, index=index, on_insert="invalidate_index"):
        index.insert(Document(text="Madrid is the capital of Spain.", id_="es"))
    _engine(index, llm, cache).query(Q_FR)
    assert llm.calls == 2


def test_ingestion_pipeline_upserts_invalidate(
        embed_model: MiniLMEmbedding, llm: ScriptedLLM, cache: RagCache) -> None:
    store = TextVectorStore()
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(), embed_model],
        docstore=SimpleDocumentStore(), vector_store=store,
        docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE)
    pipeline.run(documents=documents())
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
    index.set_index_id("pipeline-capitals")
    engine = _engine(index, llm, cache)
    engine.query(Q_FR)
    engine.query(Q_DE)
    lima = engine.query("What is the capital of Peru?")
    assert "Lima" in str(lima) and llm.calls == 3

    with watch_documents(cache, pipeline=pipeline):
        docs = [d for d in documents(fr=NEW_FR) if d.id_ != "pe"]  # "pe" is removed
        pipeline.run(documents=docs)
    assert "Lyon" in str(engine.query(Q_FR)) and llm.calls == 4
    assert "Berlin" in str(engine.query(Q_DE)) and llm.calls == 4  # unchanged: still cached
    assert "Lima" not in str(engine.query("What is the capital of Peru?"))
    assert llm.calls == 5


def test_watch_arguments_are_checked(index: VectorStoreIndex, cache: RagCache) -> None:
    with pytest.raises(ValueError):
        watch_documents(cache)
    with pytest.raises(ValueError):
        watch_documents(cache, index=index, on_insert="everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        watch_documents(cache, pipeline=IngestionPipeline(transformations=[]))
