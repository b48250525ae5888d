"""Cache warming: learn what is asked, pre-load it before users ask again.

    from rag_cache_plugin.warming import Budget, CacheWarmer
    warmer = CacheWarmer(cache, runner=chain, budget=Budget(max_tasks=20, max_cost=0.50))
    warmer.analyze_query_patterns()[:5]            # what is asked, ranked
    report = await warmer.execute_warming()        # compute the best ones now
    schedule = warmer.schedule_warming(3600)       # ... or every hour; schedule.stop()
    warmer.get_warming_stats().roi                 # saved cost / warming cost

The warmer listens on the cache's bus: lookups (``Hit``/``Miss``), stores, and the
framework handlers' ``QueryObserved`` (attach ``CacheWarmingHandler`` or
``RagCacheEventHandler`` to the cache or to the warmer) build its query log.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._analytics.prices import PriceLike, PriceTable
from ._core import RagCache
from ._flight import FlightTable
from ._warming.execute import Executor, Retry
from ._warming.log import QueryLog, default_log_path
from ._warming.patterns import QueryPattern, Scoring, analyze
from ._warming.recorder import EVENT_TYPES, Recorder
from ._warming.runner import (
    CallableRunner,
    Computed,
    QueryEngineRunner,
    RunnableRunner,
    Runner,
    as_runner,
    load_runner,
)
from ._warming.scheduler import WarmingSchedule, release_loop
from ._warming.shared import SharedLog
from ._warming.sources import read_questions
from ._warming.stats import TaskResult, WarmingReport, WarmingStats, summarize
from ._warming.tasks import Budget, WarmingTask, plan_tasks, question_tasks
from ._warming.writer import LogWriter

if TYPE_CHECKING:
    from ._events import EventBus

__all__ = [
    "Budget",
    "CacheWarmer",
    "CallableRunner",
    "Computed",
    "QueryEngineRunner",
    "QueryPattern",
    "Retry",
    "Runner",
    "RunnerLike",
    "RunnableRunner",
    "Scoring",
    "TaskResult",
    "WarmingReport",
    "WarmingSchedule",
    "WarmingStats",
    "WarmingTask",
    "as_runner",
    "default_log_path",
    "load_runner",
    "read_questions",
]

RunnerLike = Runner | Callable[..., Any] | Any
"""A ``Runner``, a LangChain ``Runnable``, a LlamaIndex query engine or a callable."""
_ANALYZE_MAX = 2_000  # families probed per analysis, heaviest first
_LIVE: weakref.WeakSet[CacheWarmer] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # what was observed last is written even without close()
    for warmer in list(_LIVE):
        with contextlib.suppress(Exception):
            warmer.close()


class CacheWarmer:
    """Warms one ``RagCache`` from its query log or from a list of questions.

    ``log_path``: the SQLite query log ("auto": ``<L2 stem>.warming.db`` beside the L2
    file, else in memory).  ``share``: also keep the log in the cache's Redis so every
    host warms from the whole fleet's questions ("auto": when the cache has L3).
    ``clock``: the time source for decay and expiry (default: the cache's).
    ``flush_interval``: seconds between writes of the log (None: only on demand).
    """

    def __init__(self, cache: RagCache, *, runner: RunnerLike | None = None,
                 log_path: str | os.PathLike[str] | Literal["auto"] | None = "auto",
                 budget: Budget | Mapping[str, Any] | None = None, concurrency: int = 4,
                 clock: Callable[[], float] | None = None,
                 scoring: Scoring | None = None, retry: Retry | None = None,
                 price_table: PriceTable | Mapping[str, PriceLike] | None = None,
                 share: bool | Literal["auto"] = "auto", flush_interval: float | None = 5.0,
                 max_rows: int = 100_000, lock_ttl: float | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        inner = getattr(cache, "cache", None)
        if not isinstance(cache, RagCache) and isinstance(inner, RagCache):
            cache = inner  # a RagLLMCache: warm the cache behind it
        self.cache = cache
        self.bus: EventBus = cache.bus
        self.namespace = cache.namespace
        self.runner = None if runner is None else as_runner(runner)
        self.budget = Budget.of(budget)
        self.concurrency = concurrency
        self.scoring = scoring or Scoring()
        self.retry = retry or Retry()
        self.clock: Callable[[], float] = clock or cache._clock
        self.prices = price_table if isinstance(price_table, PriceTable) else PriceTable(
            price_table)
        if log_path == "auto":
            log_path = default_log_path(cache.config.sqlite_path)
        self.log = QueryLog(log_path)
        if share == "auto":
            share = cache.l3 is not None
        self.shared = SharedLog(cache, self.scoring.half_life, max_rows=max_rows) \
            if share else None
        self.recorder = Recorder(cache, self.clock, self.scoring.half_life, self.prices)
        self.writer = LogWriter(self.recorder, self.log, self.shared,
                                half_life=self.scoring.half_life, max_rows=max_rows,
                                clock=self.clock, interval=flush_interval)
        # Its own lock beside each entry (":warm"), apart from lookups' single-flight.
        self.locks = FlightTable(cache, lock_ttl or self.retry.worst_case + 5.0,
                                 lock_suffix=":warm")
        self._executor = Executor(cache, self.writer, self.prices, self.locks,
                                  concurrency=concurrency, retry=self.retry,
                                  refresh_ahead=self.scoring.refresh_ahead, clock=self.clock,
                                  sleep=sleep)
        self._schedules: list[WarmingSchedule] = []
        self._unsubscribe = self.bus.subscribe(self.recorder.listener, EVENT_TYPES)
        self._closed = False
        _LIVE.add(self)
        self.writer.start()

    # -- the log --------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what was observed so far to the log (also done every ``flush_interval``)."""
        self.writer.flush()

    def analyze_query_patterns(self, *, namespace: str | None = None,
                               limit: int | None = None) -> list[QueryPattern]:
        """Patterns (paraphrase families), best score first, with whether each is cached
        now (read from the tiers)."""
        self.flush()
        rows = self.shared.rows(namespace) if self.shared is not None else None
        if rows is None:
            rows = self.log.rows(namespace)
        out = analyze(self.cache, rows, self.clock(), self.scoring, _ANALYZE_MAX)
        return out[:limit] if limit is not None else out

    # -- tasks --------------------------------------------------------------------------

    def create_warming_tasks(self, patterns: Sequence[QueryPattern] | None = None, *,
                             budget: Budget | Mapping[str, Any] | None = None,
                             refresh: bool = True) -> list[WarmingTask]:
        """The run's tasks, best first, within ``budget`` (default: the warmer's):
        uncached patterns worth warming and, with ``refresh``, popular cached entries
        near the end of their lifetime (refresh-ahead)."""
        if patterns is None:
            patterns = self.analyze_query_patterns()
        return plan_tasks(self.cache, patterns, Budget.of(budget or self.budget),
                          self.scoring, self.clock(), refresh=refresh)

    def tasks_from_questions(self, questions: Iterable[str | Mapping[str, Any]], *,
                             context: str = "", llm_string: str = "",
                             namespace: str | None = None,
                             ttl: float | None = None) -> list[WarmingTask]:
        """Tasks for a list of questions (an FAQ), in order, up to ``max_tasks``."""
        return question_tasks(self.cache, questions, context=context, llm_string=llm_string,
                              namespace=namespace, ttl=ttl, budget=self.budget)

    # -- running ------------------------------------------------------------------------

    async def execute_warming(self, tasks: Sequence[WarmingTask] | None = None, *,
                              runner: RunnerLike | None = None,
                              budget: Budget | Mapping[str, Any] | None = None,
                              progress: bool | None = None,
                              source: str | None = None) -> WarmingReport:
        """Compute and cache ``tasks`` (default: ``create_warming_tasks()``) with
        ``runner`` (default: the warmer's), ``concurrency`` at a time.  A failing task
        is retried, then reported in the result; it never stops the run.
        ``progress``: a progress bar on stderr (None: when stderr is a terminal)."""
        chosen = runner if runner is not None else self.runner
        if chosen is None:
            raise ValueError("no runner: pass runner= here or to CacheWarmer")
        run_with = as_runner(chosen)
        if tasks is None:
            tasks = await asyncio.to_thread(self.create_warming_tasks, budget=budget)
            source = source or "log"
        else:
            await asyncio.to_thread(self.flush)  # earlier traffic is not the run's
        report = await self._executor.run(list(tasks), run_with,
                                          Budget.of(budget or self.budget),
                                          source=source or "tasks", progress=progress)
        await asyncio.to_thread(self.flush)
        return report

    async def warm_questions(self, questions: Iterable[str | Mapping[str, Any]], *,
                             runner: RunnerLike | None = None, context: str = "",
                             llm_string: str = "", namespace: str | None = None,
                             ttl: float | None = None,
                             budget: Budget | Mapping[str, Any] | None = None,
                             progress: bool | None = None,
                             source: str = "questions") -> WarmingReport:
        """Warm a list of questions (see ``tasks_from_questions``)."""
        tasks = self.tasks_from_questions(questions, context=context, llm_string=llm_string,
                                          namespace=namespace, ttl=ttl)
        return await self.execute_warming(tasks, runner=runner, budget=budget,
                                          progress=progress, source=source)

    async def warm_file(self, path: str | os.PathLike[str], **kwargs: Any) -> WarmingReport:
        """Warm the questions of a file (text, JSON or JSON Lines: ``read_questions``)."""
        questions = read_questions(path)
        return await self.warm_questions(questions, source=f"file:{Path(path).name}",
                                         **kwargs)

    def schedule_warming(self, interval: float, *, runner: RunnerLike | None = None,
                         budget: Budget | Mapping[str, Any] | None = None,
                         first_delay: float = 0.0) -> WarmingSchedule:
        """Run ``execute_warming()`` from the log every ``interval`` seconds in a
        background thread (its own event loop) until ``.stop()`` or ``close()``."""
        if runner is None and self.runner is None:
            raise ValueError("no runner: pass runner= here or to CacheWarmer")

        async def job() -> WarmingReport:
            return await self.execute_warming(runner=runner, budget=budget, progress=False,
                                              source="schedule")

        async def cleanup() -> None:
            await release_loop(self.cache)

        schedule = WarmingSchedule(job, interval, first_delay=first_delay, cleanup=cleanup)
        self._schedules.append(schedule)
        return schedule

    # -- results ------------------------------------------------------------------------

    def get_warming_stats(self) -> WarmingStats:
        """Totals of every recorded run, with the hits warmed entries served and the
        return on the warming cost."""
        self.flush()
        return summarize(self.log.runs(), self.log.hit_totals())

    def get_run_history(self, limit: int | None = None) -> list[WarmingReport]:
        """Recorded runs, oldest first (the last ``limit``)."""
        return [WarmingReport.from_dict(r) for r in self.log.runs(limit)]

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the schedules and the log writer, write the log, let go of the bus."""
        if self._closed:
            return
        self._closed = True
        for schedule in self._schedules:
            schedule.stop()
        self.writer.stop()
        try:
            self.flush()
        finally:
            self._unsubscribe()
            self.log.close()
            _LIVE.discard(self)

    def __enter__(self) -> CacheWarmer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
