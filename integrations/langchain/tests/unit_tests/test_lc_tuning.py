"""The tuner attached through LangChain: ``CacheTuningHandler`` marks chain
boundaries and the tuner closes its windows (at most once per interval) there."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_rag_cache import CacheTuningHandler, RagLLMCache

from rag_cache_plugin import CacheConfig, RagCache
from rag_cache_plugin.tuning import STRATEGIES, CacheTuner, Strategy, TuningBounds


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_tuner_acts_at_chain_boundaries(tmp_path: Path,
                                        model_factory: Callable[..., Any]) -> None:
    clock = Clock()
    quick = Strategy(**{**STRATEGIES["aggressive"].to_dict(), "min_lookups": 50})
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db", ttl=30.0), clock=clock) as core:
        tuner = CacheTuner(core, None, clock=clock, strategy=quick, interval=300.0,
                           bounds=TuningBounds(max_ttl=240.0), history_path=None)
        model = model_factory("an answer", cache=RagLLMCache(core))
        chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
        handler = CacheTuningHandler(core)
        questions = [f"question {i}" for i in range(30)]
        rng = random.Random(3)
        windows = []
        for _ in range(20):  # a round every 60 s: each question comes back after ~60 s
            rng.shuffle(questions)
            for q in questions:
                clock.now += 2.0
                chain.invoke({"q": q}, config={"callbacks": [handler]})
            windows.append(tuner.brain.window)
        tuner.close()
    assert windows[-1] == 1200 // 300  # one window per interval, closed at boundaries
    changes = [d for d in tuner.history if d.kind == "change"]
    assert changes and changes[0].action == "increase_ttl"
    assert core.default_ttl is not None and 30.0 < core.default_ttl <= 240.0
