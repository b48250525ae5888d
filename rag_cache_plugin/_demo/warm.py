"""Warming in the demo: the FAQ before the first user, and, after the run, what the
query log would pre-load into an empty cache (the next deploy)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from .._warming.scheduler import release_loop
from ..warming import Budget, CacheWarmer, RunnableRunner, WarmingReport

__all__ = ["DemoWarmer"]

LOG_BUDGET = 8
"""Answers the after-run warming may compute (the most valuable first)."""


def _report(report: WarmingReport, seconds: float) -> dict[str, Any]:
    return {"source": report.source, "planned": report.planned, "warmed": report.warmed,
            "skipped": report.skipped, "failed": report.failed, "cost_usd": report.cost,
            "tokens": report.input_tokens + report.output_tokens,
            "seconds": round(seconds, 2),
            "questions": [r.question for r in report.results if r.status == "warmed"]}


class DemoWarmer:
    """A ``CacheWarmer`` on the answer cache; the app's own chain computes the answers
    (it stores them itself, through ``RagLLMCache``).  Its query log is fed by the
    LangChain warming handler's ``QueryObserved`` events."""

    def __init__(self, app: Any, workdir: Path, prices: dict[str, tuple[float, float]]) -> None:
        self.app = app
        # share=False: with --redis-url the log stays local, so the demo leaves
        # nothing of its own behind in somebody's Redis.
        self.warmer = CacheWarmer(app.llm_cache, log_path=workdir / "warming.db",
                                  price_table=prices, share=False, flush_interval=None,
                                  budget=Budget(max_tasks=LOG_BUDGET))
        self.runner = RunnableRunner(app.chain, input_key="question")
        self.runs: list[dict[str, Any]] = []

    def _run(self, coro: Any) -> dict[str, Any]:
        async def run() -> WarmingReport:
            try:
                return await coro  # type: ignore[no-any-return]
            finally:  # the loop ends here: close the async connections made for it
                for cache in (self.app.cache, self.app.retrieval_cache):
                    await release_loop(cache)

        started = time.perf_counter()
        report = asyncio.run(run())
        out = _report(report, time.perf_counter() - started)
        self.runs.append(out)
        return out

    def faq(self, questions: list[str]) -> dict[str, Any]:
        """Warm the FAQ (no budget: the list is the budget)."""
        return self._run(self.warmer.warm_questions(
            questions, runner=self.runner, budget=Budget(max_tasks=None), progress=False,
            source="faq"))

    def next_deploy(self) -> dict[str, Any]:
        """Empty both caches, as a deploy with fresh servers would, and warm the most
        valuable answers the query log knows of."""
        # The log also holds the retrievals (the LlamaIndex handler reports them on
        # the same bus); the chain recomputes answers, so only those are planned.
        self.app.clear()
        patterns = self.warmer.analyze_query_patterns(namespace=self.app.cache.namespace)
        tasks = self.warmer.create_warming_tasks(patterns)
        out = self._run(self.warmer.execute_warming(tasks, runner=self.runner,
                                                    progress=False, source="log"))
        out["patterns"] = len(patterns)
        return out

    def stats(self) -> dict[str, Any]:
        s = self.warmer.get_warming_stats()
        return {"runs": self.runs, "hits": s.hits, "saved_usd": s.saved_cost,
                "cost_usd": s.cost, "roi": s.roi}

    def close(self) -> None:
        self.warmer.close()
