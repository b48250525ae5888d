"""Warming with a real LangChain chain over ``RagLLMCache`` (a deterministic local chat
model that reports token usage): the chain fills the cache itself while warming, the
hit rate of a replayed workload rises, cost and ROI come from the handlers' usage, and
refresh-ahead makes the chain recompute an entry that is about to expire."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_rag_cache import CacheWarmingHandler, RagLLMCache
from pydantic import Field, PrivateAttr

from rag_cache_plugin import CacheConfig, Hit, Miss, RagCache, Stored
from rag_cache_plugin.warming import Budget, CacheWarmer, RunnableRunner, Scoring

PRICES = {"fake-chat": (1.0, 2.0)}
TTL = 3600.0
SYSTEM = "You answer store questions."
PROMPT = ChatPromptTemplate.from_messages([("system", SYSTEM),
                                           ("human", "{question}")])
WORKLOAD = (["When do you open?"] * 5 + ["Do you sell gift cards?"] * 4
            + ["Can I return shoes?"] * 3 + ["Is parking free?"] * 2 + ["Who founded you?"])
TOP = ["When do you open?", "Do you sell gift cards?", "Can I return shoes?"]


class UsageChatModel(GenericFakeChatModel):
    """Answers "Answer vN: <question>" and reports usage like a hosted model: input
    tokens are the prompt's words, output tokens the answer's."""

    model_name: str = "fake-chat"
    messages: Iterator[AIMessage] = Field(default_factory=lambda: iter(()))
    _calls: list[str] = PrivateAttr(default_factory=list)
    _version: int = PrivateAttr(default=1)

    @property
    def calls(self) -> list[str]:
        return self._calls

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        question = str(messages[-1].content)
        self._calls.append(question)
        text = f"Answer v{self._version}: {question}"
        tin = sum(len(str(m.content).split()) for m in messages)
        tout = len(text.split())
        msg = AIMessage(text, usage_metadata={"input_tokens": tin, "output_tokens": tout,
                                              "total_tokens": tin + tout},
                        response_metadata={"model_name": self.model_name})
        return ChatResult(generations=[ChatGeneration(message=msg)])


def usage(question: str) -> tuple[int, int]:
    tin = len(SYSTEM.split()) + len(question.split())
    return tin, len(f"Answer v1: {question}".split())


def cost(question: str) -> float:
    tin, tout = usage(question)
    return (tin * PRICES["fake-chat"][0] + tout * PRICES["fake-chat"][1]) / 1e6


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cache(tmp_path: Path, clock: Clock) -> AsyncIterator[RagCache]:
    async with RagCache(CacheConfig(sqlite_path=tmp_path / "lc.db", ttl=TTL),
                        clock=clock) as c:
        yield c


def chain_for(cache: RagCache, warmer: CacheWarmer,
              where: str = "model") -> tuple[Runnable[Any, str], UsageChatModel]:
    """The chain, with ``RagLLMCache`` as the model's own cache or as the global one."""
    if where == "global":
        set_llm_cache(RagLLMCache(cache))
        model = UsageChatModel()
    else:
        model = UsageChatModel(cache=RagLLMCache(cache))
    chain = (PROMPT | model | StrOutputParser()).with_config(
        callbacks=[CacheWarmingHandler(warmer)])
    return chain, model


def replay(chain: Runnable[Any, str], cache: RagCache, questions: list[str]) -> tuple[int, int]:
    events: list[Any] = []
    stop = cache.bus.subscribe(events.append, (Hit, Miss))
    for q in questions:
        chain.invoke({"question": q})
    stop()
    return sum(isinstance(e, Hit) for e in events), sum(isinstance(e, Miss) for e in events)


@pytest.mark.parametrize("where", ["model", "global"])
async def test_a_chain_warms_the_cache_itself_and_the_replayed_workload_hits(
        cache: RagCache, clock: Clock, where: str, global_cache_guard: None) -> None:
    # The warmer may be given the LangChain cache: it warms the RagCache behind it.
    warmer = CacheWarmer(RagLLMCache(cache), budget=Budget(max_tasks=3), price_table=PRICES,
                         scoring=Scoring(half_life=3600.0), flush_interval=None)
    assert warmer.cache is cache
    chain, model = chain_for(cache, warmer, where)
    assert replay(chain, cache, WORKLOAD) == (10, 5)
    patterns = {p.question: p for p in warmer.analyze_query_patterns()}
    p = patterns["When do you open?"]
    assert (p.total, p.misses, p.model) == (5, 1, "fake-chat")
    assert p.cost == pytest.approx(cost("When do you open?"))
    clock.t += TTL + 1  # the day's answers expired
    model.calls.clear()
    stores: list[Stored] = []
    cache.bus.subscribe(stores.append, (Stored,))
    tasks = warmer.create_warming_tasks()
    assert [t.question for t in tasks] == TOP
    report = await warmer.execute_warming(tasks, runner=RunnableRunner(
        chain, input_key="question"))
    assert report.warmed == 3 and {r.stored_by for r in report.results} == {"runner"}
    assert sorted(model.calls) == sorted(TOP)
    assert len(stores) == 3  # the chain stored each answer; the warmer did not again
    # The same workload: the warmed questions hit on their first ask now.
    model.calls.clear()
    assert replay(chain, cache, WORKLOAD) == (13, 2)
    assert sorted(model.calls) == ["Is parking free?", "Who founded you?"]
    stats = warmer.get_warming_stats()
    spent = sum(cost(q) for q in TOP)
    assert stats.cost == pytest.approx(spent, rel=1e-12)
    assert (stats.input_tokens, stats.output_tokens) == tuple(
        map(sum, zip(*(usage(q) for q in TOP), strict=True)))
    saved = sum(WORKLOAD.count(q) * cost(q) for q in TOP)
    assert stats.hits == 12 and stats.saved_cost == pytest.approx(saved, rel=1e-12)
    assert stats.roi == pytest.approx(saved / spent, rel=1e-12)
    warmer.close()


async def test_refresh_ahead_makes_the_chain_recompute_before_the_ttl_ends(
        cache: RagCache, clock: Clock) -> None:
    warmer = CacheWarmer(cache, price_table=PRICES, flush_interval=None,
                         scoring=Scoring(half_life=3600.0, refresh_ahead=0.2))
    chain, model = chain_for(cache, warmer)
    replay(chain, cache, ["When do you open?"] * 6)
    clock.t += TTL * 0.9
    tasks = warmer.create_warming_tasks()
    assert [(t.question, t.kind) for t in tasks] == [("When do you open?", "refresh")]
    model._version = 2  # the answer changed upstream
    report = await warmer.execute_warming(tasks, runner=RunnableRunner(
        chain, input_key="question"))
    assert report.refreshed == 1 and model.calls == ["When do you open?"] * 2
    clock.t += TTL * 0.5  # past the first answer's expiry
    assert chain.invoke({"question": "When do you open?"}) == "Answer v2: When do you open?"
    assert len(model.calls) == 2
    pattern = warmer.analyze_query_patterns()[0]
    assert pattern.stability == pytest.approx(3 / 5)  # one recomputation, answer changed
    warmer.close()
