"""Callback handlers: the events they emit, per call and attached globally."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_rag_cache import (
    CacheAnalyticsHandler,
    CacheTuningHandler,
    CacheWarmingHandler,
    RagLLMCache,
    enable_rag_cache_handlers,
)

from rag_cache_plugin import (
    CacheConfig,
    CacheEvent,
    CallCompleted,
    ChainBoundary,
    EventBus,
    QueryObserved,
    RagCache,
)

USAGE = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}


def collect(target: Any, *types: type[CacheEvent]) -> list[Any]:
    events: list[Any] = []
    target.bus.subscribe(events.append, types or None)
    return events


def test_handlers_need_a_bus() -> None:
    with pytest.raises(TypeError):
        CacheAnalyticsHandler(object())  # type: ignore[arg-type]

    class Engine:
        bus = EventBus()
        namespace = "eng"

    h = CacheAnalyticsHandler(Engine())
    assert h.bus is Engine.bus and h.namespace == "eng"


def test_analytics_reports_tokens_latency_and_cache_marks(
        model_factory: Callable[..., Any]) -> None:
    with RagLLMCache(CacheConfig()) as cache:
        events = collect(cache, CallCompleted)
        model = model_factory(AIMessage("Paris", usage_metadata=USAGE), cache=cache)
        handler = CacheAnalyticsHandler(cache)
        msgs = [SystemMessage("Be terse."), HumanMessage("Capital of France?")]
        model.invoke(msgs, config={"callbacks": [handler]})
        model.invoke(msgs, config={"callbacks": [handler]})
        assert model.calls == 1
        first, second = events
        assert (first.op, first.cached, second.cached) == ("chat", False, True)
        assert first.input_tokens == 7 and first.output_tokens == 3
        assert first.question == "Capital of France?" and first.source == "langchain"
        assert first.model == "CountingChatModel" and first.latency > 0
        assert first.namespace == "default" and first.error == ""


def test_analytics_reports_errors_and_llm_output_usage() -> None:
    bus_owner = RagCache(CacheConfig())
    try:
        events = collect(bus_owner, CallCompleted)
        h = CacheAnalyticsHandler(bus_owner)
        failing = RunnableLambda(lambda _: (_ for _ in ()).throw(ValueError("boom")))
        llm = FakeListLLM(responses=["x"])
        llm.invoke("hello", config={"callbacks": [h]})
        with pytest.raises(ValueError):
            (llm | failing).invoke("hello", config={"callbacks": [h]})
        assert [e.op for e in events] == ["llm", "llm"]
        assert events[0].question == "hello" and not events[0].cached

        run = uuid4()
        h.on_llm_start({"id": ["x", "Model"]}, ["p"], run_id=run)
        h.on_llm_error(RuntimeError("rate limited"), run_id=run)
        assert events[-1].error == "RuntimeError: rate limited" and events[-1].model == "Model"
        run = uuid4()
        h.on_llm_start({}, ["p"], run_id=run, invocation_params={"model": "m1"})
        h.on_llm_end(LLMResult(generations=[[]], llm_output={
            "token_usage": {"prompt_tokens": 11, "completion_tokens": 4}}), run_id=run)
        assert (events[-1].input_tokens, events[-1].output_tokens) == (11, 4)
        assert events[-1].model == "m1"
    finally:
        bus_owner.close()


def test_warming_records_question_context_and_cost(model_factory: Callable[..., Any]) -> None:
    with RagLLMCache(CacheConfig()) as cache:
        events = collect(cache, QueryObserved)
        model = model_factory(AIMessage("Paris", usage_metadata=USAGE), cache=cache)
        chain = ChatPromptTemplate.from_messages(
            [("system", "Be terse."), ("human", "{q}")]) | model | StrOutputParser()
        h = CacheWarmingHandler(cache)
        for _ in range(2):
            chain.invoke({"q": "Capital of France?"}, config={"callbacks": [h]})
        first, second = events
        assert first.question == second.question == "Capital of France?"
        assert (first.cached, second.cached) == (False, True)
        assert first.input_tokens == 7
        # The context is exactly the one the cache partitions on.
        prompt_q, prompt_ctx, _ = next(iter(cache._memo._data.values()))
        assert (first.question, first.context) == (prompt_q, prompt_ctx)
        assert "generic-fake-chat-model" in first.llm_string


def test_tuning_sees_top_level_boundaries_only(model_factory: Callable[..., Any]) -> None:
    with RagCache(CacheConfig()) as core:
        events = collect(core, ChainBoundary)
        h = CacheTuningHandler(core)
        model = model_factory("ok")
        chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
        chain.invoke({"q": "x"}, config={"callbacks": [h]})
        assert len(events) == 1 and events[0].error == ""
        bad = chain | RunnableLambda(lambda _: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            bad.invoke({"q": "x"}, config={"callbacks": [h]})
        assert len(events) == 2 and events[1].error.startswith("ZeroDivisionError")
        model.invoke("direct call", config={"callbacks": [h]})  # a model is top level too
        assert len(events) == 3


def test_global_attachment_reaches_threads_and_tasks_and_detaches(
        model_factory: Callable[..., Any]) -> None:
    with RagLLMCache(CacheConfig()) as cache:
        events = collect(cache, CallCompleted, QueryObserved, ChainBoundary)
        model = model_factory("ok", cache=cache)
        with enable_rag_cache_handlers(cache) as handlers:
            assert handlers.analytics and handlers.warming and handlers.tuning
            model.invoke("in the main thread")
            t = threading.Thread(target=lambda: model.invoke("in a plain thread"))
            t.start()
            t.join()
            asyncio.run(model.ainvoke("in a task"))
        kinds = [type(e).__name__ for e in events]
        assert kinds.count("CallCompleted") == 3
        assert kinds.count("QueryObserved") == 3
        assert kinds.count("ChainBoundary") == 3
        events.clear()
        model.invoke("after disable")
        assert events == []


def test_global_attachment_selects_handlers(model_factory: Callable[..., Any]) -> None:
    with RagCache(CacheConfig()) as core:
        events = collect(core)
        handlers = enable_rag_cache_handlers(core, warming=False, tuning=False,
                                             namespace="tenant")
        try:
            model_factory("ok").invoke("q")
        finally:
            handlers.disable()
        assert [type(e) for e in events] == [CallCompleted]
        assert events[0].namespace == "tenant"
        assert handlers.warming is None and handlers.tuning is None
