"""Shared pieces of the warming tests: a settable clock, a workload driver that
answers misses like an application would, and instrumented runners."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rag_cache_plugin import Hit, Miss, RagCache
from rag_cache_plugin.warming import Computed, Runner, WarmingTask

PRICES = {"model-a": (2.0, 8.0)}  # dollars per million input / output tokens


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def tokens_of(question: str) -> tuple[int, int]:
    """Deterministic usage of computing ``question``: (input, output) tokens."""
    return 100 + 10 * len(question.split()), 20 + len(question)


def cost_of(question: str) -> float:
    tin, tout = tokens_of(question)
    return (tin * PRICES["model-a"][0] + tout * PRICES["model-a"][1]) / 1e6


def answer(question: str, version: int = 1) -> str:
    return f"answer v{version} to {question}"


@dataclass
class Workload:
    """Replays questions against a cache, computing and storing each miss."""

    cache: RagCache
    events: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache.bus.subscribe(self.events.append, (Hit, Miss))

    def run(self, questions: Sequence[str], **kw: Any) -> tuple[int, int]:
        """(hits, misses) of one pass."""
        self.events.clear()
        for q in questions:
            if self.cache.lookup(q, **kw) is None:
                self.cache.store(q, answer(q), **kw)
        hits = sum(isinstance(e, Hit) for e in self.events)
        return hits, sum(isinstance(e, Miss) for e in self.events)


class CountingRunner:
    """An async callable runner: answers with ``Computed`` usage, records calls and the
    most runs in flight at once, and fails questions listed in ``fail`` (a number of
    times, or always)."""

    def __init__(self, *, delay: float = 0.0, fail: dict[str, int] | None = None,
                 version: int = 1, hang: Sequence[str] = ()) -> None:
        self.delay = delay
        self.fail = dict(fail or {})
        self.version = version
        self.hang = set(hang)
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, question: str) -> Computed:
        self.calls.append(question)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if question in self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay)
            left = self.fail.get(question, 0)
            if left:
                self.fail[question] = left - 1
                raise RuntimeError(f"model unavailable for {question!r}")
            tin, tout = tokens_of(question)
            return Computed(answer(question, self.version), model="model-a",
                            input_tokens=tin, output_tokens=tout)
        finally:
            self.in_flight -= 1


class ReadThroughRunner(Runner):
    """Like a chain over ``RagLLMCache``: reads the cache first and stores what it
    computes (so it fills the cache itself)."""

    def __init__(self, cache: RagCache, version: int = 2) -> None:
        self.cache = cache
        self.version = version
        self.computed: list[str] = []

    async def run(self, task: WarmingTask) -> Any:
        hit = await self.cache.alookup(task.question, context=task.context,
                                       llm_string=task.llm_string, namespace=task.namespace)
        if hit is not None:
            return hit.value
        self.computed.append(task.question)
        value = answer(task.question, self.version)
        await self.cache.astore(task.question, value, context=task.context,
                                llm_string=task.llm_string, namespace=task.namespace)
        return value
