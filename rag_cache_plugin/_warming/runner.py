"""Runners: the user's own code that computes an answer, behind one interface.

A LangChain ``Runnable`` (anything with ``ainvoke``), a LlamaIndex query engine
(anything with ``aquery``) or any callable (async, or sync run in a thread) taking
the question.  Recognised by shape, so the core imports neither framework.  A
runner whose work goes through this cache (a chain over ``RagLLMCache``, a
``CachedQueryEngine``) stores its answer itself; the warmer notices that and does
not store it twice.  For other runners the warmer stores what they return.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .tasks import WarmingTask

__all__ = ["ENV_ALLOWED", "CallableRunner", "Computed", "QueryEngineRunner", "Runner",
           "RunnableRunner", "as_runner", "load_runner", "to_value"]

ENV_ALLOWED = "RAG_CACHE_WARM_RUNNERS"
_TARGET = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z]\w*(?:\.[A-Za-z]\w*)*)$")


@dataclass(frozen=True, slots=True)
class Computed:
    """What a callable may return to say what its answer cost (otherwise the warmer
    counts the model calls the framework handlers report while it runs)."""

    value: Any
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    """US dollars; None: priced from the warmer's price table."""


@runtime_checkable
class Runner(Protocol):
    async def run(self, task: WarmingTask) -> Any: ...


class RunnableRunner:
    """``await runnable.ainvoke(question, config)``; ``input_key`` wraps the question
    in a dict for chains that take one."""

    def __init__(self, runnable: Any, *, config: Mapping[str, Any] | None = None,
                 input_key: str | None = None) -> None:
        self.runnable = runnable
        self.config = dict(config) if config is not None else None
        self.input_key = input_key

    async def run(self, task: WarmingTask) -> Any:
        inp: Any = task.question if self.input_key is None else {self.input_key: task.question}
        return await self.runnable.ainvoke(inp, self.config)


class QueryEngineRunner:
    """``await engine.aquery(question)``; a plain engine's response text is stored."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def run(self, task: WarmingTask) -> Any:
        return await self.engine.aquery(task.question)


class CallableRunner:
    """``fn(question)``: awaited when it returns an awaitable; a plain function runs in
    a worker thread (context variables go with it)."""

    def __init__(self, fn: Callable[[str], Any]) -> None:
        self.fn = fn
        call = type(fn).__dict__.get("__call__")  # an object with an async __call__
        self._async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)

    async def run(self, task: WarmingTask) -> Any:
        out = self.fn(task.question) if self._async else await asyncio.to_thread(
            self.fn, task.question)
        if inspect.isawaitable(out):
            out = await out
        return out


def as_runner(obj: Any) -> Runner:
    """The runner for ``obj`` (see the module docstring)."""
    if isinstance(obj, Runner) and inspect.iscoroutinefunction(obj.run):
        return obj
    if callable(getattr(obj, "ainvoke", None)):
        return RunnableRunner(obj)
    if callable(getattr(obj, "aquery", None)):
        return QueryEngineRunner(obj)
    if callable(obj):
        return CallableRunner(obj)
    raise TypeError(f"cannot warm with a {type(obj).__name__}: pass a Runnable, a query "
                    "engine, an (async) callable taking the question, or a Runner")


def to_value(result: Any) -> Any:
    """What to store for a runner's result: JSON data as is, a message's content, a
    query response's text, else its text form."""
    if isinstance(result, Computed):
        result = result.value
    if result is None or isinstance(result, str | int | float | bool | list | dict):
        return result
    content = getattr(result, "content", None)
    if isinstance(content, str | list):
        return content
    response = getattr(result, "response", None)
    if isinstance(response, str):
        return response
    return str(result)


def load_runner(target: str, allowed: Iterable[str] = ()) -> Runner:
    """Import ``module:attribute`` by name (never evaluated) and make it a runner.

    Refused: malformed targets, private or dunder attributes, the standard library
    (``os:system`` must never become a "runner" fed with questions), and, when an
    allow-list is given (``allowed`` and ``RAG_CACHE_WARM_RUNNERS``, comma separated),
    any module outside it."""
    m = _TARGET.match(target.strip())
    if m is None:
        raise ValueError(f"runner must look like package.module:attribute, not {target!r}")
    module_name, attr_path = m.groups()
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        raise ValueError(f"{module_name!r} is not an allowed runner module (standard library)")
    prefixes = [p.strip() for p in os.environ.get(ENV_ALLOWED, "").split(",") if p.strip()]
    prefixes += [p for p in allowed if p]
    if prefixes and not any(module_name == p or module_name.startswith(p + ".")
                            for p in prefixes):
        raise ValueError(f"{module_name!r} is not in the allowed runner modules "
                         f"({', '.join(prefixes)})")
    obj: Any = importlib.import_module(module_name)
    for name in attr_path.split("."):
        obj = getattr(obj, name)
    return as_runner(obj)
