"""CachedRetriever and CachedQueryEngine over a real VectorStoreIndex (all-MiniLM-L6-v2
embeddings through LlamaIndex's embedding interface, a deterministic local LLM)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from li_support import MiniLMEmbedding, ScriptedLLM
from llama_index.core import VectorStoreIndex
from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle
from llama_index_rag_cache import CachedQueryEngine, CachedRetriever, index_tag

from rag_cache_plugin import CacheConfig, Hit, Miss, RagCache, RedisConfig, SemanticConfig

Q_FR = "What is the capital of France?"
Q_DE = "What is the capital of Germany?"


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[RagCache]:
    with RagCache(CacheConfig(sqlite_path=tmp_path / "l2.db")) as c:
        yield c


def _events(cache: RagCache) -> list[object]:
    seen: list[object] = []
    cache.bus.subscribe(seen.append, (Hit, Miss))
    return seen


# -- query engine ---------------------------------------------------------------------


def test_repeated_query_is_served_without_retriever_or_llm(
        index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache, retrievals: object,
        embed_model: MiniLMEmbedding) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm), cache)
    events = _events(cache)
    first = engine.query(Q_FR)
    assert isinstance(first, Response) and "Paris" in str(first)
    assert (llm.calls, retrievals.calls) == (1, 1)  # type: ignore[attr-defined]
    embeds = embed_model.calls

    again = engine.query(Q_FR)
    lexical = engine.query("  what is the capital of FRANCE ")
    assert (llm.calls, retrievals.calls) == (1, 1)  # type: ignore[attr-defined]
    assert embed_model.calls == embeds  # an exact hit embeds nothing
    assert again == first and lexical == first  # answer, source nodes and metadata
    assert [type(e).__name__ for e in events] == ["Miss", "Hit", "Hit"]
    assert events[1].tier == "l1" and events[1].kind == "exact"  # type: ignore[attr-defined]


def test_look_alike_query_misses(index: VectorStoreIndex, llm: ScriptedLLM,
                                 cache: RagCache, retrievals: object) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm), cache)
    engine.query(Q_FR)
    other = engine.query("What is the capital of Peru?")
    assert llm.calls == 2 and retrievals.calls == 2  # type: ignore[attr-defined]
    assert "Lima" in str(other)


def test_paraphrased_query_is_served_from_the_cache(
        tmp_path: Path, index: VectorStoreIndex, llm: ScriptedLLM, retrievals: object,
        embed_model: MiniLMEmbedding) -> None:
    # "balanced": this checks the integration, not how strict the verifier is.
    config = CacheConfig(sqlite_path=tmp_path / "l2.db",
                         semantic=SemanticConfig(embedder=embed_model, setting="balanced"))
    with RagCache(config) as cache:
        engine = CachedQueryEngine(index.as_query_engine(llm=llm), cache)
        first = engine.query(Q_FR)
        events = _events(cache)
        para = engine.query("What's the capital of France?")
        assert (llm.calls, retrievals.calls) == (1, 1)  # type: ignore[attr-defined]
        assert para == first
        assert events and events[-1].kind == "semantic"  # type: ignore[attr-defined]
        # A look-alike with another meaning still misses.
        engine.query("What is the capital of Peru?")
        assert llm.calls == 2  # type: ignore[attr-defined]


def test_hit_comes_back_from_l2_in_a_fresh_cache(
        tmp_path: Path, index: VectorStoreIndex, llm: ScriptedLLM) -> None:
    with RagCache(CacheConfig(sqlite_path=tmp_path / "l2.db")) as c1:
        first = CachedQueryEngine(index.as_query_engine(llm=llm), c1).query(Q_FR)
    with RagCache(CacheConfig(sqlite_path=tmp_path / "l2.db")) as c2:
        events = _events(c2)
        again = CachedQueryEngine(index.as_query_engine(llm=llm), c2).query(Q_FR)
    assert again == first and llm.calls == 1
    assert events[0].tier == "l2"  # type: ignore[attr-defined]


async def test_async_query(index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache,
                           retrievals: object) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm), cache)
    first = await engine.aquery(Q_FR)
    again = await engine.aquery(Q_FR)
    sync_again = engine.query(Q_FR)
    assert isinstance(first, Response) and again == first and sync_again == first
    assert (llm.calls, retrievals.calls) == (1, 1)  # type: ignore[attr-defined]


def test_settings_partition_the_entries(index: VectorStoreIndex, llm: ScriptedLLM,
                                        cache: RagCache) -> None:
    CachedQueryEngine(index.as_query_engine(llm=llm), cache).query(Q_FR)
    CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=3), cache).query(Q_FR)
    CachedQueryEngine(index.as_query_engine(llm=ScriptedLLM(model="other")), cache).query(Q_FR)
    assert llm.calls == 2  # the third used its own LLM, and missed too
    CachedQueryEngine(index.as_query_engine(llm=llm), cache).query(Q_FR)
    assert llm.calls == 2


# -- streaming ------------------------------------------------------------------------


def test_stream_is_cached_once_consumed_and_replayed(
        index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, streaming=True), cache)
    events = _events(cache)
    first = engine.query(Q_FR)
    assert isinstance(first, StreamingResponse)
    # Not consumed yet: nothing cached, the next query computes again.
    second = engine.query(Q_FR)
    assert [type(e).__name__ for e in events] == ["Miss", "Miss"]
    pieces = list(first.response_gen)
    assert len(pieces) > 3 and llm.calls == 1
    text = "".join(pieces)
    assert str(second) == text and llm.calls == 2
    replay = engine.query(Q_FR)
    assert isinstance(replay, StreamingResponse)
    assert list(replay.response_gen) == pieces
    assert replay.source_nodes == first.source_nodes
    assert llm.calls == 2 and type(events[-1]).__name__ == "Hit"


def test_abandoned_stream_is_not_cached(index: VectorStoreIndex, llm: ScriptedLLM,
                                        cache: RagCache) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, streaming=True), cache)
    gen = engine.query(Q_FR).response_gen  # type: ignore[union-attr]
    next(gen)
    gen.close()
    again = engine.query(Q_FR)
    assert isinstance(again, StreamingResponse)
    assert "".join(again.response_gen).startswith("From the sources")
    assert llm.calls == 2


async def test_async_stream_replays_as_async_stream(
        index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, streaming=True), cache)
    first = await engine.aquery(Q_FR)
    assert isinstance(first, AsyncStreamingResponse)
    pieces = [p async for p in first.async_response_gen()]
    replay = await engine.aquery(Q_FR)
    assert llm.calls == 1
    assert isinstance(replay, AsyncStreamingResponse)
    assert [p async for p in replay.async_response_gen()] == pieces
    sync_replay = engine.query(Q_FR)
    assert isinstance(sync_replay, StreamingResponse)
    assert "".join(sync_replay.response_gen) == "".join(pieces)


# -- retriever ------------------------------------------------------------------------


def test_cached_retriever_round_trips_nodes(index: VectorStoreIndex, cache: RagCache,
                                            retrievals: object) -> None:
    retriever = CachedRetriever(index.as_retriever(similarity_top_k=2), cache)
    first = retriever.retrieve(Q_FR)
    again = retriever.retrieve(QueryBundle(Q_FR))
    assert retrievals.calls == 1  # type: ignore[attr-defined]
    assert again == first and len(first) == 2
    assert first[0].node.ref_doc_id == "fr"


async def test_cached_retriever_async(index: VectorStoreIndex, cache: RagCache,
                                      retrievals: object) -> None:
    retriever = CachedRetriever(index.as_retriever(), cache)
    first = await retriever.aretrieve(Q_FR)
    assert await retriever.aretrieve(Q_FR) == first
    assert retriever.retrieve(Q_FR) == first
    assert retrievals.calls == 1  # type: ignore[attr-defined]


def test_retriever_query_engine_over_a_cached_retriever(
        index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache, retrievals: object) -> None:
    retriever = CachedRetriever(index.as_retriever(similarity_top_k=1), cache)
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
    first = engine.query(Q_FR)
    second = engine.query(Q_FR)
    # The retrieval is cached; the (uncached) engine still asks the LLM.
    assert retrievals.calls == 1 and llm.calls == 2  # type: ignore[attr-defined]
    assert str(first) == str(second)
    cached_engine = CachedQueryEngine(engine, cache)
    cached_engine.query(Q_FR)
    cached_engine.query(Q_FR)
    assert llm.calls == 3


def test_entries_carry_document_node_and_index_tags(
        index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=1), cache)
    response = engine.query(Q_FR)
    node_id = response.source_nodes[0].node.node_id
    for tag in (node_id, index_tag(index)):
        engine.query(Q_FR)
        assert cache.invalidate(tags=[tag]) == 1
        engine.query(Q_FR)  # recomputed and stored again
    assert llm.calls == 3


def test_wrappers_refuse_wrong_arguments(index: VectorStoreIndex, llm: ScriptedLLM,
                                         cache: RagCache) -> None:
    with pytest.raises(TypeError):
        CachedRetriever(index.as_query_engine(llm=llm), cache)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CachedQueryEngine(index.as_retriever(), cache)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CachedQueryEngine(index.as_query_engine(llm=llm), {})  # type: ignore[arg-type]


def test_unavailable_redis_is_a_miss_not_an_error(
        index: VectorStoreIndex, llm: ScriptedLLM) -> None:
    config = CacheConfig(redis=RedisConfig(url="redis://127.0.0.1:1/0", timeout=0.05,
                                           connect_timeout=0.05, cluster=False))
    with RagCache(config) as cache:
        engine = CachedQueryEngine(index.as_query_engine(llm=llm), cache)
        assert "Paris" in str(engine.query(Q_FR))
        assert "Paris" in str(engine.query(Q_FR))
    assert llm.calls == 1  # L1 still served the repeat


def test_results_that_are_not_json_are_served_uncached(
        embed_model: MiniLMEmbedding, llm: ScriptedLLM, cache: RagCache,
        retrievals: object) -> None:
    import datetime

    from llama_index.core import Document

    doc = Document(text="Paris is the capital of France.", id_="fr",
                   metadata={"fetched": datetime.datetime(2024, 5, 1)})
    index = VectorStoreIndex.from_documents([doc], embed_model=embed_model)
    retriever = CachedRetriever(index.as_retriever(), cache)
    assert retriever.retrieve(Q_FR)[0].node.metadata["fetched"].year == 2024
    retriever.retrieve(Q_FR)
    assert retrievals.calls == 2  # type: ignore[attr-defined]


def test_a_foreign_value_under_the_key_is_a_miss(index: VectorStoreIndex, llm: ScriptedLLM,
                                                 cache: RagCache) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm), cache)
    ident = engine._binding.identity
    cache.store(Q_FR, {"format": "something/else"}, context=ident.context,
                llm_string=ident.llm_string)
    assert "Paris" in str(engine.query(Q_FR))  # recomputed, and the entry overwritten
    assert "Paris" in str(engine.query(Q_FR)) and llm.calls == 1


def test_ttl_is_checked(index: VectorStoreIndex, cache: RagCache) -> None:
    for bad in (0, -1, True, "10"):
        with pytest.raises(ValueError):
            CachedRetriever(index.as_retriever(), cache, ttl=bad)  # type: ignore[arg-type]
    CachedRetriever(index.as_retriever(), cache, ttl=0.5)
