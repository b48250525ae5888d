"""The instrumentation and legacy callback handlers turn LlamaIndex events into the
core's framework events (counts and fields checked)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from li_support import MiniLMEmbedding, ScriptedLLM, answer_for
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import CompletionResponse
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index_rag_cache import (
    CachedQueryEngine,
    CachedRetriever,
    RagCacheCallbackHandler,
    RagCacheEventHandler,
)

from rag_cache_plugin import (
    CacheConfig,
    CacheEvent,
    CallCompleted,
    ChainBoundary,
    EventBus,
    Hit,
    Miss,
    QueryObserved,
    RagCache,
)

Q_FR = "What is the capital of France?"
Q_DE = "What is the capital of Germany?"
MODEL = "scripted-llm-1"
EMBED = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def cache() -> Iterator[RagCache]:
    with RagCache(CacheConfig()) as c:
        yield c


@pytest.fixture
def seen(cache: RagCache) -> list[CacheEvent]:
    out: list[CacheEvent] = []
    cache.bus.subscribe(out.append, (CallCompleted, QueryObserved, ChainBoundary, Hit, Miss))
    return out


@pytest.fixture
def handler(cache: RagCache) -> Iterator[RagCacheEventHandler]:
    h = RagCacheEventHandler.attach(cache)
    yield h
    h.detach()


def _summary(events: list[CacheEvent]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, CallCompleted):
            out.append(f"{e.op}{'*' if e.cached else ''}{'!' if e.error else ''}")
        else:
            out.append(type(e).__name__)
    return out


def test_miss_then_hit(index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache,
                       seen: list[CacheEvent], handler: RagCacheEventHandler) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=1), cache)
    answer = engine.query(Q_FR)
    assert _summary(seen) == ["Miss", "embedding", "retrieval", "llm", "query",
                              "QueryObserved", "ChainBoundary"]
    emb, ret, call, query, observed, boundary = seen[1:]
    assert isinstance(emb, CallCompleted) and emb.model == EMBED and emb.latency > 0
    assert isinstance(ret, CallCompleted) and ret.question == Q_FR and not ret.cached
    assert isinstance(call, CallCompleted) and call.model == MODEL
    assert call.output_tokens == len(str(answer).split()) and call.input_tokens > 20
    assert all(getattr(e, "source", "llama_index") == "llama_index" for e in seen[1:])
    assert isinstance(query, CallCompleted) and query.question == Q_FR and not query.cached
    assert isinstance(observed, QueryObserved)
    assert (observed.question, observed.cached, observed.model) == (Q_FR, False, MODEL)
    assert (observed.input_tokens, observed.output_tokens) == (call.input_tokens,
                                                               call.output_tokens)
    assert observed.context.startswith("llama_index:query:") and MODEL in observed.llm_string
    assert observed.namespace == cache.namespace
    assert observed.latency >= query.latency >= call.latency
    assert isinstance(boundary, ChainBoundary) and boundary.error == ""

    seen.clear()
    engine.query(Q_FR)
    assert _summary(seen) == ["Hit", "query*", "QueryObserved", "ChainBoundary"]
    hit, query, observed, _ = seen
    assert isinstance(query, CallCompleted) and query.key == hit.key and query.question == Q_FR
    assert isinstance(observed, QueryObserved) and observed.cached
    assert (observed.input_tokens, observed.output_tokens) == (0, 0)


def test_cached_retriever_events(index: VectorStoreIndex, cache: RagCache,
                                 seen: list[CacheEvent], handler: RagCacheEventHandler) -> None:
    retriever = CachedRetriever(index.as_retriever(), cache)
    retriever.retrieve(Q_FR)
    retriever.retrieve(Q_FR)
    assert _summary(seen) == ["Miss", "embedding", "retrieval", "QueryObserved",
                              "ChainBoundary", "Hit", "retrieval*", "QueryObserved",
                              "ChainBoundary"]
    first, second = seen[3], seen[7]
    assert isinstance(first, QueryObserved) and not first.cached
    assert first.context.startswith("llama_index:retrieval:")
    assert isinstance(second, QueryObserved) and second.cached and second.question == Q_FR


def test_errors_end_calls_and_the_chain(index: VectorStoreIndex, cache: RagCache,
                                        seen: list[CacheEvent],
                                        handler: RagCacheEventHandler) -> None:
    class Broken(ScriptedLLM):
        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False,
                     **kwargs: Any) -> CompletionResponse:
            raise RuntimeError("model overloaded")

    engine = CachedQueryEngine(index.as_query_engine(llm=Broken(), similarity_top_k=1), cache)
    with pytest.raises(RuntimeError):
        engine.query(Q_FR)
    names = _summary(seen)
    assert names[:3] == ["Miss", "embedding", "retrieval"]
    assert "llm!" in names and "query!" in names and "QueryObserved" not in names
    boundary = seen[-1]
    assert isinstance(boundary, ChainBoundary) and "model overloaded" in boundary.error
    assert names.count("ChainBoundary") == 1
    # The failure left nothing behind: the next query is a fresh top-level query.
    seen.clear()
    CachedRetriever(index.as_retriever(), cache).retrieve(Q_DE)
    assert _summary(seen)[-2:] == ["QueryObserved", "ChainBoundary"]


async def test_concurrent_async_queries_are_kept_apart(
        index: VectorStoreIndex, llm: ScriptedLLM, cache: RagCache,
        seen: list[CacheEvent], handler: RagCacheEventHandler) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=1), cache)
    await asyncio.gather(engine.aquery(Q_FR), engine.aquery(Q_DE))
    observed = [e for e in seen if isinstance(e, QueryObserved)]
    calls = {e.question: e for e in seen if isinstance(e, CallCompleted) and e.op == "query"}
    assert sorted(o.question for o in observed) == sorted([Q_FR, Q_DE])
    assert sum(isinstance(e, ChainBoundary) for e in seen) == 2
    llm_calls = [e for e in seen if isinstance(e, CallCompleted) and e.op == "llm"]
    assert len(llm_calls) == 2 and set(calls) == {Q_FR, Q_DE}
    # Each query is charged its own LLM call.
    assert sum(o.output_tokens for o in observed) == sum(c.output_tokens for c in llm_calls)
    assert all(o.output_tokens > 0 for o in observed)


def test_streamed_llm_usage_is_counted(index: VectorStoreIndex, llm: ScriptedLLM,
                                       cache: RagCache, seen: list[CacheEvent],
                                       handler: RagCacheEventHandler) -> None:
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, streaming=True,
                                                     similarity_top_k=1), cache)
    text = "".join(engine.query(Q_FR).response_gen)  # type: ignore[union-attr]
    llm_calls = [e for e in seen if isinstance(e, CallCompleted) and e.op == "llm"]
    assert len(llm_calls) == 1 and llm_calls[0].output_tokens == len(text.split())


def test_target_may_be_any_engine_with_a_bus(index: VectorStoreIndex, cache: RagCache) -> None:
    class Engine:
        def __init__(self) -> None:
            self.bus = EventBus()
            self.namespace = "analytics"

    engine = Engine()
    got: list[CacheEvent] = []
    engine.bus.subscribe(got.append)
    h = RagCacheEventHandler.attach(engine)
    try:
        CachedRetriever(index.as_retriever(), cache).retrieve(Q_FR)
    finally:
        h.detach()
    assert [type(e).__name__ for e in got][-2:] == ["QueryObserved", "ChainBoundary"]
    assert got[0].namespace == "analytics"
    with pytest.raises(TypeError):
        RagCacheEventHandler(object())


def test_detached_handler_is_silent(index: VectorStoreIndex, cache: RagCache,
                                    seen: list[CacheEvent]) -> None:
    RagCacheEventHandler.attach(cache).detach()
    CachedRetriever(index.as_retriever(), cache).retrieve(Q_FR)
    assert _summary(seen) == ["Miss"]


# -- legacy callbacks ------------------------------------------------------------------


def test_legacy_callback_handler(monkeypatch: pytest.MonkeyPatch, embed_model: MiniLMEmbedding,
                                 cache: RagCache, seen: list[CacheEvent]) -> None:
    from li_support import documents

    manager = CallbackManager([RagCacheCallbackHandler(cache)])
    monkeypatch.setattr(Settings, "_callback_manager", manager)
    # Building an index hands its callback manager to the (shared) embedding model.
    monkeypatch.setattr(embed_model, "callback_manager", embed_model.callback_manager)
    index = VectorStoreIndex.from_documents(documents(), embed_model=embed_model)
    index.set_index_id("legacy")
    llm = ScriptedLLM(callback_manager=manager)
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=1), cache)
    seen.clear()
    answer = engine.query(Q_FR)
    names = _summary(seen)
    assert names == ["Miss", "embedding", "retrieval", "llm", "query", "QueryObserved",
                     "ChainBoundary"]
    assert isinstance(seen[1], CallCompleted) and seen[1].model == EMBED
    call = seen[3]
    assert isinstance(call, CallCompleted) and call.output_tokens == len(str(answer).split())
    observed = seen[5]
    assert isinstance(observed, QueryObserved) and observed.question == Q_FR
    assert observed.output_tokens == call.output_tokens and not observed.cached
    assert observed.model == MODEL

    seen.clear()
    engine.query(Q_FR)
    assert _summary(seen) == ["Hit", "query*", "QueryObserved", "ChainBoundary"]
    assert isinstance(seen[2], QueryObserved) and seen[2].cached
    assert answer_for  # the answers quote their sources (see li_support)


class _Engine:
    """Stands for an analytics engine: it has a bus."""

    def __init__(self) -> None:
        self.bus = EventBus()
        self.namespace = "default"
        self.got: list[CacheEvent] = []
        self.bus.subscribe(self.got.append)


def test_both_handlers_at_once_and_a_cached_retriever(
        monkeypatch: pytest.MonkeyPatch, embed_model: MiniLMEmbedding, cache: RagCache) -> None:
    from li_support import documents

    modern, legacy = _Engine(), _Engine()
    manager = CallbackManager([RagCacheCallbackHandler(legacy)])
    monkeypatch.setattr(Settings, "_callback_manager", manager)
    monkeypatch.setattr(embed_model, "callback_manager", embed_model.callback_manager)
    index = VectorStoreIndex.from_documents(documents(), embed_model=embed_model)
    handler = RagCacheEventHandler.attach(modern)
    try:
        llm = ScriptedLLM(callback_manager=manager)
        engine = CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=1), cache)
        retriever = CachedRetriever(index.as_retriever(), cache)
        for _ in range(2):
            engine.query(Q_FR)
            retriever.retrieve(Q_DE)
    finally:
        handler.detach()
    for target in (modern, legacy):
        observed = [e for e in target.got if isinstance(e, QueryObserved)]
        assert [(o.question, o.cached) for o in observed] == [
            (Q_FR, False), (Q_DE, False), (Q_FR, True), (Q_DE, True)], target
        cached = [e.op for e in target.got if isinstance(e, CallCompleted) and e.cached]
        assert cached == ["query", "retrieval"], target
        assert sum(isinstance(e, ChainBoundary) for e in target.got) == 4
