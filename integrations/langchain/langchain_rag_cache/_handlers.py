"""Callback handlers: LangChain callbacks in, the core's framework events out.

They are thin on purpose: each one times runs, reads what LangChain reports (usage,
cache marks, errors) and emits one event on its target's bus.  The analytics, warming
and tuning engines subscribe to that bus.  Every handler runs inline (no executor hop
in async runs): emitting an event is cheaper than a thread switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal, Protocol
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumps
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from rag_cache_plugin import CallCompleted, ChainBoundary, EventBus, QueryObserved

from ._generations import MARK
from ._prompt import parse_prompt, split_content

__all__ = ["CacheAnalyticsHandler", "CacheTuningHandler", "CacheWarmingHandler"]

_SOURCE = "langchain"
_MAX_ERROR = 500


class HasBus(Protocol):
    """What a handler emits on: a ``RagCache``, a ``RagLLMCache`` or an engine."""

    @property
    def bus(self) -> EventBus: ...


@dataclass(slots=True)
class _Run:
    started: float
    op: Literal["llm", "chat", "retrieval", "chain"]
    model: str = ""
    question: str = ""
    context: str = ""
    llm_string: str = ""


# -- what LangChain reports -------------------------------------------------------------


def _model_id(serialized: dict[str, Any] | None, metadata: dict[str, Any] | None,
              params: dict[str, Any] | None) -> str:
    for source, key in ((metadata, "ls_model_name"), (params, "model"),
                        (params, "model_name"), (params, "model_id")):
        value = (source or {}).get(key)
        if isinstance(value, str) and value:
            return value
    if serialized:
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
        if serialized.get("name"):
            return str(serialized["name"])
    return str((params or {}).get("_type", ""))


def _llm_string(params: dict[str, Any] | None) -> str:
    # What BaseChatModel._get_llm_string gives for models that are not
    # lc-serializable; for serializable ones it is the closest stable stand-in.
    return str(sorted((params or {}).items())) if params else ""


def _question_of(messages: Sequence[BaseMessage]) -> str:
    for m in reversed(messages):
        if m.type == "human" or (m.type == "chat" and getattr(m, "role", "") == "user"):
            return split_content(m.content)[0]
    return ""


def _tokens(response: LLMResult) -> tuple[int, int]:
    """(input, output) tokens: messages' ``usage_metadata``, else ``llm_output``."""
    tin = tout = 0
    seen = False
    for gens in response.generations:
        for g in gens:
            usage = getattr(getattr(g, "message", None), "usage_metadata", None)
            if usage:
                seen = True
                tin += int(usage.get("input_tokens", 0) or 0)
                tout += int(usage.get("output_tokens", 0) or 0)
    if seen:
        return tin, tout
    out = response.llm_output or {}
    usage = out.get("token_usage") or out.get("usage") or {}
    if isinstance(usage, dict):
        tin = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
        tout = int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)
    return tin, tout


def is_cached(response: LLMResult) -> bool:
    """True when every generation carries this cache's mark."""
    found = False
    for gens in response.generations:
        for g in gens:
            msg = getattr(g, "message", None)
            meta = getattr(msg, "response_metadata", None) if msg is not None else None
            if not ((meta and MARK in meta) or (g.generation_info and MARK in g.generation_info)):
                return False
            found = True
    return found


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_MAX_ERROR]


# -- handlers ---------------------------------------------------------------------------


class _Handler(BaseCallbackHandler):
    run_inline = True  # cheap and thread-safe: no executor hop in async runs

    def __init__(self, target: HasBus, *, namespace: str | None = None) -> None:
        bus = getattr(target, "bus", None)
        if not isinstance(bus, EventBus):
            raise TypeError("target needs a .bus (a RagCache, a RagLLMCache or an engine)")
        self.target = target
        self.bus = bus
        self.namespace = namespace or getattr(target, "namespace", None) or "default"
        # run id -> run; dict get/set/pop are atomic, so threads may share it.
        self._runs: dict[UUID, _Run] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r})"


class CacheAnalyticsHandler(_Handler):
    """Emits ``CallCompleted`` for model and retriever calls: latency, model, tokens,
    errors, and ``cached=True`` when the answer carries this cache's marks."""

    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._runs[run_id] = _Run(
            perf_counter(), "llm",
            _model_id(serialized, metadata, kwargs.get("invocation_params")),
            prompts[0] if prompts else "")

    def on_chat_model_start(self, serialized: dict[str, Any],
                            messages: list[list[BaseMessage]], *, run_id: UUID,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._runs[run_id] = _Run(
            perf_counter(), "chat",
            _model_id(serialized, metadata, kwargs.get("invocation_params")),
            _question_of(messages[0]) if messages else "")

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        tin, tout = _tokens(response)
        self.bus.emit(CallCompleted(
            self.namespace, "", run.op, perf_counter() - run.started, run.model, tin, tout,
            is_cached(response), "", run.question, _SOURCE))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self.bus.emit(CallCompleted(
                self.namespace, "", run.op, perf_counter() - run.started, run.model,
                error=_error(error), question=run.question, source=_SOURCE))

    def on_retriever_start(self, serialized: dict[str, Any], query: str, *, run_id: UUID,
                           **kwargs: Any) -> None:
        self._runs[run_id] = _Run(perf_counter(), "retrieval",
                                  _model_id(serialized, None, None), query)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self.bus.emit(CallCompleted(
                self.namespace, "", "retrieval", perf_counter() - run.started, run.model,
                question=run.question, source=_SOURCE))

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self.bus.emit(CallCompleted(
                self.namespace, "", "retrieval", perf_counter() - run.started, run.model,
                error=_error(error), question=run.question, source=_SOURCE))


class CacheWarmingHandler(_Handler):
    """Emits ``QueryObserved`` per answered model call: the question (last human message
    or the prompt), its context as the cache sees it, the model, latency, tokens and
    whether the cache answered.  The warming engine builds its query log from these."""

    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        params = kwargs.get("invocation_params")
        self._runs[run_id] = _Run(
            perf_counter(), "llm", _model_id(serialized, metadata, params),
            prompts[0] if prompts else "", "", _llm_string(params))

    def on_chat_model_start(self, serialized: dict[str, Any],
                            messages: list[list[BaseMessage]], *, run_id: UUID,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        params = kwargs.get("invocation_params")
        question, context = ("", "")
        if messages:
            # The same split the cache makes, so a warmer can store into the same partition.
            question, context = parse_prompt(dumps(messages[0]))
        self._runs[run_id] = _Run(perf_counter(), "chat", _model_id(serialized, metadata, params),
                                  question, context, _llm_string(params))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        tin, tout = _tokens(response)
        self.bus.emit(QueryObserved(
            self.namespace, "", run.question, perf_counter() - run.started, run.context,
            run.llm_string, run.model, tin, tout, is_cached(response), _SOURCE))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._runs.pop(run_id, None)  # nothing was answered, nothing to warm


class CacheTuningHandler(_Handler):
    """Emits ``ChainBoundary`` when a top-level run (a chain, or a model called
    directly) ends or fails: a safe point for the tuner to apply changes."""

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    def _start(self, run_id: UUID, parent_run_id: UUID | None, op: Any) -> None:
        if parent_run_id is None:
            self._runs[run_id] = _Run(perf_counter(), op)

    def _end(self, run_id: UUID, error: BaseException | None = None) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self.bus.emit(ChainBoundary(self.namespace, "", perf_counter() - run.started,
                                        "" if error is None else _error(error), _SOURCE))

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._start(run_id, parent_run_id, "chain")

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._start(run_id, parent_run_id, "llm")

    def on_chat_model_start(self, serialized: dict[str, Any],
                            messages: list[list[BaseMessage]], *, run_id: UUID,
                            parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._start(run_id, parent_run_id, "chat")

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)
