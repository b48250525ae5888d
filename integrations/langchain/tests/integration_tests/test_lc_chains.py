"""RagLLMCache under real LangChain runnables (fake chat models, no network)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.tools import tool
from langchain_rag_cache import CacheAnalyticsHandler, RagLLMCache, is_cached
from pydantic import BaseModel

from rag_cache_plugin import CacheConfig, CallCompleted, SemanticConfig

Factory = Callable[..., Any]
PROMPT = ChatPromptTemplate.from_messages([
    ("system", "{system}"), MessagesPlaceholder("history"), ("human", "{question}")])


@pytest.fixture
def cache() -> Iterator[RagLLMCache]:
    with RagLLMCache(CacheConfig()) as c:
        yield c


def ask(question: str, system: str = "You are terse.", history: Any = ()) -> dict[str, Any]:
    return {"system": system, "history": list(history), "question": question}


def test_second_identical_call_is_answered_from_the_cache(
        model_factory: Factory, global_cache_guard: None) -> None:
    with RagLLMCache(CacheConfig()) as cache:
        set_llm_cache(cache)  # the global cache, as users set it
        model = model_factory("Paris.", "Lyon?")
        chain = PROMPT | model | StrOutputParser()
        assert chain.invoke(ask("Capital of France?")) == "Paris."
        assert chain.invoke(ask("Capital of France?")) == "Paris."
        assert chain.invoke(ask("capital of  france")) == "Paris."  # lexical variant
        assert model.calls == 1


def test_a_different_system_prompt_or_history_misses(cache: RagLLMCache,
                                                     model_factory: Factory) -> None:
    model = model_factory("a", "b", "c", "d", cache=cache)
    chain = PROMPT | model | StrOutputParser()
    history = [HumanMessage("I live in Oslo."), AIMessage("Noted.")]
    answers = [
        chain.invoke(ask("Where do I live?")),
        chain.invoke(ask("Where do I live?", system="You are verbose.")),
        chain.invoke(ask("Where do I live?", history=history)),
        chain.invoke(ask("Where do I live?", history=history[:1])),
    ]
    assert answers == ["a", "b", "c", "d"] and model.calls == 4
    assert chain.invoke(ask("Where do I live?", history=history)) == "c"  # history hit
    assert model.calls == 4


def test_cached_answers_in_the_history_keep_later_turns_cacheable(
        cache: RagLLMCache, model_factory: Factory) -> None:
    """A hit comes back with marks and LangChain's ``total_cost: 0``; once that message
    is in the history, the next turn must still find the entry the cold run stored
    (langchain-ai/langchain#35308 is this failure in other caches)."""
    model = model_factory(AIMessage("4", usage_metadata={"input_tokens": 5, "output_tokens": 1,
                                                         "total_tokens": 6}),
                          AIMessage("8"), cache=cache)

    def conversation() -> list[str]:
        history: list[Any] = [SystemMessage("You are terse.")]
        answers = []
        for question in ("What is 2+2?", "And doubled?"):
            history.append(HumanMessage(question))
            reply = model.invoke(history)
            history.append(reply)
            answers.append(reply.content)
        return answers

    assert conversation() == ["4", "8"] and model.calls == 2  # cold
    assert conversation() == ["4", "8"] and model.calls == 2  # every turn from the cache


def test_model_settings_and_bound_tools_never_cross(cache: RagLLMCache,
                                                    model_factory: Factory) -> None:
    @tool
    def weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    model = model_factory("plain", "with tools", "stopped", cache=cache)
    msgs = [HumanMessage("Weather in Oslo?")]
    assert model.invoke(msgs).content == "plain"
    assert model.bind_tools([weather]).invoke(msgs).content == "with tools"
    assert model.invoke(msgs, stop=["\n"]).content == "stopped"
    assert model.invoke(msgs).content == "plain" and model.calls == 3


def test_tool_calls_survive_the_round_trip(cache: RagLLMCache, model_factory: Factory) -> None:
    @tool
    def get_order(order_id: str) -> str:
        """Look an order up."""
        return "delivered"

    call = AIMessage("", tool_calls=[{"name": "get_order", "args": {"order_id": "40213"},
                                      "id": "call_1"}],
                     usage_metadata={"input_tokens": 9, "output_tokens": 4, "total_tokens": 13},
                     response_metadata={"finish_reason": "tool_calls"})
    model = model_factory(call, AIMessage("It was delivered."), cache=cache)
    bound = model.bind_tools([get_order])
    conversation: list[Any] = [SystemMessage("Support bot."), HumanMessage("Where is 40213?")]
    first = bound.invoke(conversation)
    again = bound.invoke(conversation)
    assert model.calls == 1
    assert again.tool_calls == first.tool_calls == [
        {"name": "get_order", "args": {"order_id": "40213"}, "id": "call_1",
         "type": "tool_call"}]
    assert again.usage_metadata["input_tokens"] == 9  # type: ignore[index]
    assert again.response_metadata["finish_reason"] == "tool_calls"
    assert again.response_metadata["rag_cache"]["tier"] == "l1"
    # The agent loop continues: tool result in the history, then a final answer, cached
    # too, and found again when the provider's tool-call id differs next time.
    follow_up = [*conversation, first, ToolMessage("delivered", tool_call_id="call_1")]
    assert bound.invoke(follow_up).content == "It was delivered."
    renamed = [*conversation,
               AIMessage("", tool_calls=[{**first.tool_calls[0], "id": "call_zz"}]),
               ToolMessage("delivered", tool_call_id="call_zz")]
    assert bound.invoke(renamed).content == "It was delivered."
    assert model.calls == 2


class Capital(BaseModel):
    city: str
    population_millions: float


def test_structured_output_survives_the_round_trip(cache: RagLLMCache,
                                                   model_factory: Factory) -> None:
    reply = AIMessage("", tool_calls=[{"name": "Capital", "id": "call_9",
                                       "args": {"city": "Paris", "population_millions": 2.1}}])
    model = model_factory(reply, AIMessage("", tool_calls=[{
        "name": "Capital", "id": "c", "args": {"city": "WRONG", "population_millions": 0}}]),
        cache=cache)
    structured = model.with_structured_output(Capital)
    first = structured.invoke("Capital of France?")
    again = structured.invoke("Capital of France?")
    assert first == again == Capital(city="Paris", population_millions=2.1)
    assert model.calls == 1
    raw = model.with_structured_output(Capital, include_raw=True).invoke("Capital of France?")
    assert raw["parsed"] == first and model.calls == 1  # same bound tools: same partition


async def test_ainvoke_and_abatch(cache: RagLLMCache, model_factory: Factory) -> None:
    model = model_factory("one", "two", "three", cache=cache)
    chain = PROMPT | model | StrOutputParser()
    assert await chain.ainvoke(ask("q1")) == "one"
    assert await chain.ainvoke(ask("q1")) == "one"
    results = await chain.abatch([ask("q1"), ask("q2"), ask("q3")])
    assert results[0] == "one" and sorted(results[1:]) == ["three", "two"]
    assert model.calls == 3
    again = await chain.abatch([ask("q1"), ask("q2"), ask("q3")])
    assert again == results and model.calls == 3


async def test_fifty_concurrent_identical_calls_run_the_model_once(
        cache: RagLLMCache, model_factory: Factory) -> None:
    model = model_factory("slow answer", "SECOND CALL", delay=0.3, cache=cache)
    chain = PROMPT | model | StrOutputParser()
    results = await asyncio.gather(*(chain.ainvoke(ask("Same question?")) for _ in range(50)))
    assert results == ["slow answer"] * 50
    assert model.calls == 1


def test_concurrent_threads_run_the_model_once(cache: RagLLMCache,
                                               model_factory: Factory) -> None:
    model = model_factory("answer", "SECOND CALL", delay=0.3, cache=cache)
    chain = PROMPT | model | StrOutputParser()
    results = chain.batch([ask("Same?")] * 8, config={"max_concurrency": 8})
    assert results == ["answer"] * 8 and model.calls == 1


class Flaky(BaseModel):
    fail_first: bool = True


def _flaky(model: Any) -> Any:
    """Make the model's first call fail (after a while), as a provider error would."""
    state = Flaky()
    real, areal = model._generate, model._agenerate

    def gen(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        if state.fail_first:
            state.fail_first = False
            raise RuntimeError("provider error")
        return out

    async def agen(*a: Any, **k: Any) -> Any:
        out = await areal(*a, **k)
        if state.fail_first:
            state.fail_first = False
            raise RuntimeError("provider error")
        return out

    object.__setattr__(model, "_generate", gen)
    object.__setattr__(model, "_agenerate", agen)
    return model


async def test_a_failed_async_call_hands_over_at_once(model_factory: Factory) -> None:
    with RagLLMCache(CacheConfig(single_flight_timeout=30)) as cache:
        model = _flaky(model_factory("answer", delay=0.2, cache=cache))
        chain = PROMPT | model | StrOutputParser()
        started = time.monotonic()
        results = await chain.abatch([ask("Same?")] * 5, return_exceptions=True)
        assert sum(isinstance(r, RuntimeError) for r in results) == 1
        assert [r for r in results if isinstance(r, str)] == ["answer"] * 4
        assert model.calls == 2  # the failed leader, then one follower for all
        assert time.monotonic() - started < 5  # no one waited for the 30 s timeout


def test_a_failed_sync_call_holds_others_at_most_the_timeout(model_factory: Factory) -> None:
    with RagLLMCache(CacheConfig(single_flight_timeout=0.5)) as cache:
        model = _flaky(model_factory("answer", delay=0.2, cache=cache))
        chain = PROMPT | model | StrOutputParser()
        started = time.monotonic()
        results = chain.batch([ask("Same?")] * 4, config={"max_concurrency": 4},
                              return_exceptions=True)
        assert sum(isinstance(r, RuntimeError) for r in results) == 1
        assert [r for r in results if isinstance(r, str)] == ["answer"] * 3
        # A thread cannot be seen to fail: followers wait out the leader's lease, then
        # go ahead (each may call the model), never longer.
        assert 2 <= model.calls <= 4
        assert time.monotonic() - started < 0.5 + 0.2 * 2 + 1.0


def test_handlers_see_the_cache_marks(cache: RagLLMCache, model_factory: Factory) -> None:
    events: list[CallCompleted] = []
    cache.bus.subscribe(events.append, (CallCompleted,))  # type: ignore[arg-type]
    model = model_factory("Paris", cache=cache)
    chain = PROMPT | model | StrOutputParser()
    handler = CacheAnalyticsHandler(cache)
    chain.invoke(ask("Capital?"), config={"callbacks": [handler]})
    chain.invoke(ask("Capital?"), config={"callbacks": [handler]})
    assert [e.cached for e in events] == [False, True]
    result = model.generate([[SystemMessage("You are terse."), HumanMessage("Capital?")]])
    assert is_cached(result)


# -- semantic matching ------------------------------------------------------------------


@pytest.mark.slow
def test_a_paraphrase_hits_with_the_real_model(model_factory: Factory) -> None:
    # The shipped default embedder (MiniLM adapted to question equivalence), strict.
    cfg = CacheConfig(semantic=SemanticConfig())
    with RagLLMCache(cfg) as cache:
        model = model_factory("Paris is the capital of France.", "SECOND CALL", cache=cache)
        chain = PROMPT | model | StrOutputParser()
        assert chain.invoke(ask("What is the capital of France?")) == \
            "Paris is the capital of France."
        hit = model.invoke([SystemMessage("You are terse."),
                            HumanMessage("What's the capital of France?")])
        assert hit.content == "Paris is the capital of France." and model.calls == 1
        mark = hit.response_metadata["rag_cache"]
        assert mark["kind"] == "semantic" and 0 < mark["score"] <= 1
        # The same paraphrase under another system prompt never matches.
        other = model.invoke([SystemMessage("You are verbose."),
                              HumanMessage("What's the capital of France?")])
        assert other.content == "SECOND CALL" and model.calls == 2


@pytest.mark.slow
def test_a_wrong_answer_is_reported_back(model_factory: Factory) -> None:
    """``RagLLMCache.feedback`` takes what the model call returned: a wrong semantic hit
    blocks that pair (the next ask goes to the model), a wrong exact hit is dropped."""
    cfg = CacheConfig(semantic=SemanticConfig())
    with RagLLMCache(cfg) as cache:
        model = model_factory("Paris.", "Fresh answer.", "In Paris.", "In Paris, France.",
                              cache=cache)
        system = SystemMessage("You are terse.")
        model.invoke([system, HumanMessage("What is the capital of France?")])
        hit = model.invoke([system, HumanMessage("What's the capital of France?")])
        assert hit.response_metadata["rag_cache"]["kind"] == "semantic" and model.calls == 1
        thresholds = cache.cache.semantic.feedback_state(cache.namespace).thresholds  # type: ignore[union-attr]
        cache.feedback(hit, correct=False)
        assert thresholds, "the partition's threshold was tightened"
        again = model.invoke([system, HumanMessage("What's the capital of France?")])
        assert again.content == "Fresh answer." and model.calls == 2
        # Another conversation (its own partition) for the exact case.
        brief = SystemMessage("You are brief.")
        model.invoke([brief, HumanMessage("Where is the Louvre?")])
        exact = model.invoke([brief, HumanMessage("Where is the Louvre?")])
        assert exact.response_metadata["rag_cache"]["kind"] == "exact" and model.calls == 3
        cache.feedback(exact.response_metadata["rag_cache"], correct=False)  # the mark works too
        model.invoke([brief, HumanMessage("Where is the Louvre?")])
        assert model.calls == 4, "the wrong exact answer was dropped"
        with pytest.raises(ValueError):
            cache.feedback(AIMessage("not from the cache"), correct=False)
