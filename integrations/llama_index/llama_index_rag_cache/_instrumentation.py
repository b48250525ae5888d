"""``RagCacheEventHandler``: LlamaIndex instrumentation events -> cache framework events.

Start and end events of one call share a span id, so latency is measured between
them; an error ends a call through the ``SpanDropEvent`` (or, for a stream, the
``ExceptionEvent``) of its span.  A companion span handler records each open
span's parent, which tells an outermost query from a nested one, charges LLM
tokens to the outermost query they served, and drops LLM calls made inside
another LLM call (``CustomLLM.acomplete`` runs ``complete``), which would
otherwise count twice.  A cache wrapper's span is reported only when it was
served from the cache: on a miss the wrapped call below it reports the real work.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
    SparseEmbeddingEndEvent,
)
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.query import QueryEndEvent, QueryStartEvent
from llama_index.core.instrumentation.events.retrieval import (
    RetrievalEndEvent,
    RetrievalStartEvent,
)
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.events.span import SpanDropEvent
from pydantic import PrivateAttr

from rag_cache_plugin import CacheEvent, CallCompleted, ChainBoundary, QueryObserved

from . import _marks
from ._usage import model_name, question_of, token_usage

__all__ = ["RagCacheEventHandler"]

_log = logging.getLogger("llama_index_rag_cache")

SOURCE = "llama_index"
_MAX_OPEN = 10_000  # spans or calls whose end never came (abandoned streams) are forgotten
_MODEL_OPS = frozenset({"llm", "chat", "embedding"})
_LLM_OPS = frozenset({"llm", "chat"})


@dataclass(slots=True)
class _Call:
    op: str
    span: str
    started: float
    model: str = ""
    question: str = ""
    frame: str | None = None
    """Span of the outermost query or retrieval this call serves."""


@dataclass(slots=True)
class _Frame:
    """An outermost query or retrieval, collecting the LLM usage under it."""

    started: float
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


_STARTS: dict[type[BaseEvent], str] = {
    QueryStartEvent: "query", RetrievalStartEvent: "retrieval", LLMChatStartEvent: "chat",
    LLMCompletionStartEvent: "llm", EmbeddingStartEvent: "embedding",
}
_ENDS: dict[type[BaseEvent], str] = {
    QueryEndEvent: "query", RetrievalEndEvent: "retrieval", LLMChatEndEvent: "chat",
    LLMCompletionEndEvent: "llm", EmbeddingEndEvent: "embedding",
    SparseEmbeddingEndEvent: "embedding",
}


def _bounded_put(d: dict[Any, Any], key: Any, value: Any) -> None:
    if len(d) >= _MAX_OPEN:
        for stale in list(d)[: _MAX_OPEN // 10]:
            del d[stale]
    d[key] = value


class _SpanTree(BaseSpanHandler[Any]):
    """Parents of the open spans (nothing else: no span objects are kept)."""

    _parents: dict[str, str | None] = PrivateAttr(default_factory=dict)
    _tree_lock: Any = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "RagCacheSpanTree"

    def span_enter(self, id_: str, bound_args: inspect.BoundArguments,
                   instance: Any = None, parent_id: str | None = None,
                   tags: dict[str, Any] | None = None, **kwargs: Any) -> None:
        with self._tree_lock:
            _bounded_put(self._parents, id_, parent_id)

    def span_exit(self, id_: str, bound_args: inspect.BoundArguments,
                  instance: Any = None, result: Any = None, **kwargs: Any) -> None:
        with self._tree_lock:
            self._parents.pop(id_, None)

    def span_drop(self, id_: str, bound_args: inspect.BoundArguments,
                  instance: Any = None, err: BaseException | None = None,
                  **kwargs: Any) -> None:
        with self._tree_lock:
            self._parents.pop(id_, None)

    def ancestors(self, span: str) -> Iterator[str]:
        """The open spans above ``span``, nearest first."""
        with self._tree_lock:
            chain: list[str] = []
            parent = self._parents.get(span)
            while parent is not None and len(chain) < 256:  # 256: a guard against loops
                chain.append(parent)
                parent = self._parents.get(parent)
        return iter(chain)

    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


class RagCacheEventHandler(BaseEventHandler):
    """Emits ``CallCompleted`` (source "llama_index") for queries, retrievals, LLM and
    embedding calls, and ``QueryObserved`` + ``ChainBoundary`` when an outermost query
    or retrieval ends, on ``target.bus`` (a ``RagCache``, or any engine with a
    ``.bus``).  Attach it with ``RagCacheEventHandler.attach(target)``.

    The wrappers' own hits and misses are the core's ``Hit`` / ``Miss`` events on
    their cache's bus.  A streamed answer's LLM call happens after its query has
    ended, so it is reported on its own and not charged to the query.
    """

    _target: Any = PrivateAttr()
    _emit: Callable[[CacheEvent], None] = PrivateAttr()
    _namespace: str = PrivateAttr(default="")
    _calls: dict[tuple[str, str], _Call] = PrivateAttr(default_factory=dict)
    _frames: dict[str, _Frame] = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _tree: _SpanTree = PrivateAttr(default_factory=_SpanTree)
    _dispatcher: Any = PrivateAttr(default=None)

    def __init__(self, target: Any, **data: Any) -> None:
        bus = getattr(target, "bus", None)
        if bus is None or not callable(getattr(bus, "emit", None)):
            raise TypeError("target needs a .bus with emit() (a RagCache or an engine)")
        super().__init__(**data)
        self._target = target
        self._emit = bus.emit
        self._namespace = str(getattr(target, "namespace", "") or "")

    @classmethod
    def class_name(cls) -> str:
        return "RagCacheEventHandler"

    @classmethod
    def attach(cls, target: Any, dispatcher: Any = None) -> RagCacheEventHandler:
        """Create a handler for ``target`` and add it (and its span tracker) to
        ``dispatcher`` (default: the root dispatcher, which sees every event)."""
        handler = cls(target)
        d = dispatcher if dispatcher is not None else get_dispatcher()
        d.add_span_handler(handler._tree)
        d.add_event_handler(handler)
        handler._dispatcher = d
        return handler

    def detach(self) -> None:
        """Remove this handler from the dispatcher ``attach`` added it to."""
        d = self._dispatcher
        if d is not None:
            d.event_handlers = [h for h in d.event_handlers if h is not self]
            d.span_handlers = [h for h in d.span_handlers if h is not self._tree]
            self._dispatcher = None

    @property
    def target(self) -> Any:
        return self._target

    # -- dispatch ------------------------------------------------------------------

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        try:
            self._handle(event)
        except Exception:  # an observer must never break the user's query
            _log.debug("rag-cache event handler failed", exc_info=True)

    def _handle(self, event: BaseEvent) -> None:
        kind = type(event)
        op = _STARTS.get(kind) or next(
            (o for k, o in _STARTS.items() if isinstance(event, k)), None)
        if op is not None:
            self._start(op, event)
            return
        op = _ENDS.get(kind)
        if op is not None:
            self._end(op, event)
        elif isinstance(event, SpanDropEvent):
            self._failed(event.span_id or "", event.err_str, ops=None)
        elif isinstance(event, ExceptionEvent):
            self._failed(event.span_id or "", repr(event.exception), ops=_LLM_OPS)

    def _start(self, op: str, event: BaseEvent) -> None:
        span = event.span_id or ""
        call = _Call(op, span, perf_counter())
        same_kind = _LLM_OPS if op in _LLM_OPS else frozenset({op})
        with self._lock:
            for parent in self._tree.ancestors(span):
                if op in _MODEL_OPS and any((o, parent) in self._calls for o in same_kind):
                    return  # a model call inside a model call: the outer one reports
                if parent in self._frames:
                    call.frame = parent
            if op in _MODEL_OPS:
                call.model = model_name(getattr(event, "model_dict", None))
            else:
                call.question = question_of(getattr(event, "query", None)
                                            or getattr(event, "str_or_query_bundle", None))
                if call.frame is None:
                    _bounded_put(self._frames, span, _Frame(call.started))
                    call.frame = span
            _bounded_put(self._calls, (op, span), call)

    def _end(self, op: str, event: BaseEvent) -> None:
        span = event.span_id or ""
        with self._lock:
            call = self._calls.pop((op, span), None)
            if call is None:
                return  # a nested model call, or one that started before attach()
            frame = self._frames.get(call.frame) if call.frame is not None else None
            top = call.frame == span and op not in _MODEL_OPS
            if top:
                self._frames.pop(span, None)
        latency = perf_counter() - call.started
        if op in _LLM_OPS:
            tin, tout = token_usage(getattr(event, "response", None))
            if frame is not None:
                frame.input_tokens += tin
                frame.output_tokens += tout
                frame.model = frame.model or call.model
            self._emit(CallCompleted(self._namespace, "", op, latency, call.model,  # type: ignore[arg-type]
                                     tin, tout, source=SOURCE))
            return
        if op == "embedding":
            self._emit(CallCompleted(self._namespace, "", "embedding", latency, call.model,
                                     source=SOURCE))
            return
        query = getattr(event, "query", None) if op == "query" else \
            getattr(event, "str_or_query_bundle", None)
        question = question_of(query) or call.question
        outcome = _marks.take(op, question, self)  # type: ignore[arg-type]
        ns = outcome.namespace if outcome is not None else self._namespace
        key = outcome.key if outcome is not None else ""
        totals = (frame.model, frame.input_tokens, frame.output_tokens) \
            if top and frame is not None else ("", 0, 0)
        if outcome is None or outcome.hit:  # a wrapper's miss: the wrapped call reported
            self._emit(CallCompleted(ns, key, op, latency, *totals,  # type: ignore[arg-type]
                                     cached=outcome is not None, question=question,
                                     source=SOURCE))
        if top:
            self._emit(QueryObserved(
                ns, key, question, latency, outcome.context if outcome else "",
                outcome.llm_string if outcome else "", *totals,
                cached=bool(outcome and outcome.hit), source=SOURCE))
            self._emit(ChainBoundary(ns, "", latency, source=SOURCE))

    def _failed(self, span: str, error: str, ops: frozenset[str] | None) -> None:
        with self._lock:
            calls = [c for k, c in self._calls.items()
                     if k[1] == span and (ops is None or k[0] in ops)]
            for c in calls:
                del self._calls[(c.op, c.span)]
            frame = self._frames.pop(span, None) if ops is None else None
        now = perf_counter()
        for c in calls:
            self._emit(CallCompleted(self._namespace, "", c.op, now - c.started,  # type: ignore[arg-type]
                                     c.model, error=error, question=c.question,
                                     source=SOURCE))
        if frame is not None:
            self._emit(ChainBoundary(self._namespace, "", now - frame.started, error=error,
                                     source=SOURCE))
