"""``RagCacheCallbackHandler``: the same translation for the legacy ``CallbackManager``.

Legacy events pair by ``event_id``; the outermost trace ("query") bounds a query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload

from rag_cache_plugin import CacheEvent, CallCompleted, ChainBoundary, QueryObserved

from . import _marks
from ._usage import model_name, token_usage

__all__ = ["RagCacheCallbackHandler"]

SOURCE = "llama_index"
_MAX_PENDING = 10_000
_OPS = {CBEventType.QUERY: "query", CBEventType.RETRIEVE: "retrieval",
        CBEventType.LLM: "llm", CBEventType.EMBEDDING: "embedding"}


@dataclass(slots=True)
class _Call:
    op: str
    started: float
    model: str = ""
    question: str = ""


@dataclass(slots=True)
class _Trace:
    started: float
    question: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    error: str = ""
    outcome: _marks.Outcome | None = None
    """What the query or retrieval that ended last got from a cache wrapper."""


class RagCacheCallbackHandler(BaseCallbackHandler):
    """For apps on ``CallbackManager``: ``CallCompleted`` for queries, retrievals, LLM
    and embedding calls, and ``QueryObserved`` + ``ChainBoundary`` at the end of each
    outermost "query" trace, on ``target.bus`` (a ``RagCache`` or an engine).

    ``Settings.callback_manager = CallbackManager([RagCacheCallbackHandler(cache)])``
    """

    def __init__(self, target: Any) -> None:
        bus = getattr(target, "bus", None)
        if bus is None or not callable(getattr(bus, "emit", None)):
            raise TypeError("target needs a .bus with emit() (a RagCache or an engine)")
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.target = target
        self._emit: Callable[[CacheEvent], None] = bus.emit
        self._namespace = str(getattr(target, "namespace", "") or "")
        self._calls: dict[str, _Call] = {}
        self._lock = threading.Lock()
        self._trace: ContextVar[_Trace | None] = ContextVar(
            f"rag_cache_trace_{id(self)}", default=None)

    def on_event_start(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                       event_id: str = "", parent_id: str = "", **kwargs: Any) -> str:
        payload = payload or {}
        if event_type == CBEventType.EXCEPTION:  # a leaf event: it has no end
            trace = self._trace.get()
            if trace is not None:
                trace.error = repr(payload.get(EventPayload.EXCEPTION))
            return event_id
        op = _OPS.get(event_type)
        if op is None:
            return event_id
        call = _Call(op, perf_counter(), model_name(payload.get(EventPayload.SERIALIZED)),
                     str(payload.get(EventPayload.QUERY_STR) or ""))
        if op == "llm" and EventPayload.MESSAGES in payload:
            call.op = "chat"
        trace = self._trace.get()
        if trace is not None and call.question and not trace.question:
            trace.question = call.question
        with self._lock:
            if len(self._calls) >= _MAX_PENDING:
                for stale in list(self._calls)[: _MAX_PENDING // 10]:
                    del self._calls[stale]
            self._calls[event_id] = call
        return event_id

    def on_event_end(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                     event_id: str = "", **kwargs: Any) -> None:
        with self._lock:
            call = self._calls.pop(event_id, None)
        if call is None:
            return
        payload = payload or {}
        latency = perf_counter() - call.started
        exc = payload.get(EventPayload.EXCEPTION)
        error = repr(exc) if exc is not None else ""
        tin = tout = 0
        trace = self._trace.get()
        if call.op in ("llm", "chat"):
            tin, tout = token_usage(payload.get(EventPayload.COMPLETION)
                                    or payload.get(EventPayload.RESPONSE))
            if trace is not None:
                trace.input_tokens += tin
                trace.output_tokens += tout
                trace.model = trace.model or call.model
        elif call.op in ("query", "retrieval") and not error:
            outcome = _marks.take(call.op, call.question, self)  # type: ignore[arg-type]
            if trace is not None:
                trace.outcome = outcome
            if outcome is not None and not outcome.hit:
                return  # a wrapper's miss: the wrapped call reports the real work
            if outcome is not None:
                self._emit(CallCompleted(outcome.namespace, outcome.key, call.op,  # type: ignore[arg-type]
                                         latency, cached=True, question=call.question,
                                         source=SOURCE))
                return
        self._emit(CallCompleted(self._namespace, "", call.op, latency, call.model,  # type: ignore[arg-type]
                                 tin, tout, error=error, question=call.question,
                                 source=SOURCE))

    def start_trace(self, trace_id: str | None = None) -> None:
        if trace_id == "query":
            self._trace.set(_Trace(perf_counter()))

    def end_trace(self, trace_id: str | None = None,
                  trace_map: dict[str, list[str]] | None = None) -> None:
        trace = self._trace.get()
        if trace_id != "query" or trace is None:
            return
        self._trace.set(None)
        latency = perf_counter() - trace.started
        # A query engine wrapper has no QUERY event of its own: its outcome is pending.
        outcome = _marks.take_any("query", self) or trace.outcome
        ns = outcome.namespace if outcome is not None else self._namespace
        question = outcome.question if outcome is not None else trace.question
        if outcome is not None and outcome.hit and outcome.op == "query":
            # A query engine's hit has no QUERY event of its own: report it here.
            self._emit(CallCompleted(ns, outcome.key, "query", latency, cached=True,
                                     question=question, source=SOURCE))
        if not trace.error:
            self._emit(QueryObserved(
                ns, outcome.key if outcome else "", question, latency,
                outcome.context if outcome else "", outcome.llm_string if outcome else "",
                trace.model, trace.input_tokens, trace.output_tokens,
                cached=bool(outcome and outcome.hit), source=SOURCE))
        self._emit(ChainBoundary(ns, "", latency, error=trace.error, source=SOURCE))
