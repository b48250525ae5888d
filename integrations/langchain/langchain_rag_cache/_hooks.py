"""Attach the handlers to every LangChain run in the process with one call.

LangChain adds the handler held by a registered context variable to every callback
manager it configures (``register_configure_hook``).  We register one variable whose
default is a fan-out handler, so runs in every thread and task see it, and enabling
or disabling handler sets only edits the fan-out's list.  While the list is empty
the fan-out ignores every event, so LangChain skips it.
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook

from ._handlers import CacheAnalyticsHandler, CacheTuningHandler, CacheWarmingHandler, HasBus

__all__ = ["RagCacheHandlers", "enable_rag_cache_handlers"]

_log = logging.getLogger("langchain_rag_cache")


def _forward(name: str, ignore: str) -> Any:
    def method(self: _FanOut, *args: Any, **kwargs: Any) -> None:
        for h in self.handlers:
            if getattr(h, ignore):
                continue
            try:
                getattr(h, name)(*args, **kwargs)
            except Exception:  # one handler's failure must not starve the others
                _log.exception("rag-cache handler %s.%s failed", type(h).__name__, name)

    method.__name__ = name
    return method


def _ignored(ignore: str) -> property:
    return property(lambda self: all(getattr(h, ignore) for h in self.handlers))


class _FanOut(BaseCallbackHandler):
    """Forwards callbacks to the enabled handlers."""

    run_inline = True

    def __init__(self) -> None:
        self.handlers: tuple[BaseCallbackHandler, ...] = ()
        self._lock = threading.Lock()

    def add(self, handlers: tuple[BaseCallbackHandler, ...]) -> None:
        with self._lock:  # copy-on-write: callbacks iterate a tuple without the lock
            self.handlers = (*self.handlers, *handlers)

    def remove(self, handlers: tuple[BaseCallbackHandler, ...]) -> None:
        with self._lock:
            self.handlers = tuple(h for h in self.handlers if all(h is not x for x in handlers))

    ignore_llm = _ignored("ignore_llm")
    ignore_chat_model = _ignored("ignore_chat_model")
    ignore_chain = _ignored("ignore_chain")
    ignore_retriever = _ignored("ignore_retriever")
    ignore_agent = property(lambda self: True)
    ignore_retry = property(lambda self: True)
    ignore_custom_event = property(lambda self: True)

    on_llm_start = _forward("on_llm_start", "ignore_llm")
    on_chat_model_start = _forward("on_chat_model_start", "ignore_chat_model")
    on_llm_end = _forward("on_llm_end", "ignore_llm")
    on_llm_error = _forward("on_llm_error", "ignore_llm")
    on_chain_start = _forward("on_chain_start", "ignore_chain")
    on_chain_end = _forward("on_chain_end", "ignore_chain")
    on_chain_error = _forward("on_chain_error", "ignore_chain")
    on_retriever_start = _forward("on_retriever_start", "ignore_retriever")
    on_retriever_end = _forward("on_retriever_end", "ignore_retriever")
    on_retriever_error = _forward("on_retriever_error", "ignore_retriever")


_FANOUT = _FanOut()
_registered = False
_register_lock = threading.Lock()


def _register() -> None:
    global _registered
    with _register_lock:
        if not _registered:
            # Registered on first use, not at import: importing this package changes nothing.
            var: ContextVar[BaseCallbackHandler | None] = ContextVar(
                "rag_cache_handlers", default=_FANOUT)
            register_configure_hook(var, True)
            _registered = True


class RagCacheHandlers:
    """The handlers one ``enable_rag_cache_handlers`` call attached; ``disable()`` (or
    leaving the ``with`` block) detaches them."""

    def __init__(self, analytics: CacheAnalyticsHandler | None,
                 warming: CacheWarmingHandler | None,
                 tuning: CacheTuningHandler | None) -> None:
        self.analytics = analytics
        self.warming = warming
        self.tuning = tuning
        self.handlers: tuple[BaseCallbackHandler, ...] = tuple(
            h for h in (analytics, warming, tuning) if h is not None)

    def disable(self) -> None:
        _FANOUT.remove(self.handlers)

    def __enter__(self) -> RagCacheHandlers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disable()


def enable_rag_cache_handlers(target: HasBus, *, analytics: bool = True, warming: bool = True,
                              tuning: bool = True,
                              namespace: str | None = None) -> RagCacheHandlers:
    """Attach the chosen handlers, emitting on ``target.bus``, to every LangChain run in
    this process (every thread and task) until ``disable()``.  Also a context manager."""
    made = RagCacheHandlers(
        CacheAnalyticsHandler(target, namespace=namespace) if analytics else None,
        CacheWarmingHandler(target, namespace=namespace) if warming else None,
        CacheTuningHandler(target, namespace=namespace) if tuning else None,
    )
    _register()
    _FANOUT.add(made.handlers)
    return made
