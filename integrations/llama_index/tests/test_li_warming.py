"""Warming with a real LlamaIndex query engine over a small ``VectorStoreIndex`` and a
deterministic local LLM: a ``CachedQueryEngine`` fills the cache itself while
warming, a plain engine's answers are stored by the warmer, and the usage the event
handler reports is what the run cost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from li_support import HashEmbedding, ScriptedLLM, documents
from llama_index.core import VectorStoreIndex
from llama_index_rag_cache import CachedQueryEngine, RagCacheEventHandler

from rag_cache_plugin import CacheConfig, Hit, Miss, RagCache
from rag_cache_plugin.warming import Budget, CacheWarmer, Scoring

PRICES = {"scripted-llm-1": (1.0, 4.0)}
Q_FR, Q_DE = "What is the capital of France?", "What is the capital of Germany?"
Q_JP, Q_PE = "What is the capital of Japan?", "What is the capital of Peru?"
WORKLOAD = [Q_FR] * 4 + [Q_DE] * 3 + [Q_JP] * 2 + [Q_PE]


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[RagCache]:
    async with RagCache(CacheConfig(sqlite_path=tmp_path / "li.db")) as c:
        yield c


@pytest.fixture
def index() -> VectorStoreIndex:
    idx = VectorStoreIndex.from_documents(documents(), embed_model=HashEmbedding())
    idx.set_index_id("capitals")
    return idx


@pytest.fixture
def warmer(cache: RagCache) -> Iterator[CacheWarmer]:
    w = CacheWarmer(cache, budget=Budget(max_tasks=2), price_table=PRICES, flush_interval=None,
                    scoring=Scoring(half_life=3600.0))
    handler = RagCacheEventHandler.attach(w)  # QueryObserved and usage onto the warmer's bus
    yield w
    handler.detach()
    w.close()


def replay(engine: Any, cache: RagCache, questions: list[str]) -> tuple[int, int]:
    events: list[Any] = []
    stop = cache.bus.subscribe(events.append, (Hit, Miss))
    for q in questions:
        engine.query(q)
    stop()
    return sum(isinstance(e, Hit) for e in events), sum(isinstance(e, Miss) for e in events)


async def test_a_cached_query_engine_warms_itself(cache: RagCache, index: VectorStoreIndex,
                                                  warmer: CacheWarmer) -> None:
    llm = ScriptedLLM()
    engine = CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=1), cache)
    assert replay(engine, cache, WORKLOAD) == (6, 4)
    patterns = {p.question: p for p in warmer.analyze_query_patterns()}
    fr = patterns[Q_FR]
    assert (fr.total, fr.model) == (4, "scripted-llm-1") and fr.cost and fr.cost > 0
    cache.clear()  # say, a deployment emptied the cache; the log remains
    calls = llm.calls
    report = await warmer.execute_warming(runner=engine)
    assert [r.question for r in report.results] == [Q_FR, Q_DE]
    assert {r.stored_by for r in report.results} == {"runner"} and llm.calls == calls + 2
    # Cost as the handler reported it: exactly the LLM usage of the two queries.
    assert report.cost == pytest.approx(sum(
        (r.input_tokens * 1.0 + r.output_tokens * 4.0) / 1e6 for r in report.results))
    assert report.results[0].cost == pytest.approx(fr.cost)
    assert replay(engine, cache, WORKLOAD) == (8, 2)
    stats = warmer.get_warming_stats()
    assert stats.hits == 7
    saved = 4 * report.results[0].cost + 3 * report.results[1].cost
    assert stats.saved_cost == pytest.approx(saved) and stats.roi == pytest.approx(
        saved / report.cost)


async def test_a_plain_engine_answers_are_stored_by_the_warmer(
        cache: RagCache, index: VectorStoreIndex, warmer: CacheWarmer) -> None:
    llm = ScriptedLLM()
    plain = index.as_query_engine(llm=llm, similarity_top_k=1)
    report = await warmer.warm_questions([Q_FR, Q_JP], runner=plain)
    assert [r.stored_by for r in report.results] == ["warmer", "warmer"]
    hit = cache.lookup(Q_JP)
    assert hit is not None and hit.value == str(plain.query(Q_JP))  # the response text
    assert report.input_tokens > 0 and report.cost > 0  # usage from the event handler
