"""Running the demo: build the app, attach the engines through their callback
handlers, ask the workload with progress on screen, and close analytics windows
as it goes.  Every figure of the summary is then read from what analytics stored."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ..analytics import CacheAnalytics, HealthScore, MetricSnapshot, Recommendation
from .questions import FAQ, Ask, build_workload
from .tune import make_tuner, tuner_state
from .warm import LOG_BUDGET, DemoWarmer

__all__ = ["DemoOptions", "DemoRun", "Outcome", "run_demo"]

PRICE = (2.50, 10.00)
"""US dollars per million input / output tokens the simulated model is priced at
(gpt-4o's list price)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    questions: int = 360
    latency_scale: float = 0.25
    """Fraction of a hosted model's latency the local model sleeps."""
    seed: int = 7
    semantic_setting: Literal["strict", "balanced"] = "strict"
    redis_url: str | None = None
    redis_label: str = ""
    """How the summary names the Redis (e.g. "local cluster, 3 primaries")."""
    report: Path | None = Path(".rag-cache/demo-report.html")
    l1_max_entries: int = 32
    """Small on purpose: L2 answers what L1 evicted, and the tuner has work to do."""
    window: int = 20
    """Questions per analytics window (a snapshot, alert rules evaluated, a point on
    the report's charts); 20 is the fewest lookups the hit-rate rules judge."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the user saw for one ask: the cache's mark (None: the model answered)."""

    ask: Ask
    answer: str
    cache: dict[str, Any] | None
    tokens: tuple[int, int]
    seconds: float


@dataclass
class DemoRun:
    options: DemoOptions
    outcomes: list[Outcome]
    snapshot: MetricSnapshot
    """The analytics windows of the questions, merged: the source of the figures
    (warming has windows of its own)."""
    windows: int
    health: HealthScore
    recommendations: list[Recommendation]
    alerts: list[dict[str, Any]]
    active_alerts: list[str]
    report: Path | None
    model_calls: int
    """Calls the model itself counted while the questions were asked (a cross-check
    of analytics)."""
    simulated_latency: tuple[float, float]
    """Seconds: (fixed part, per output token)."""
    startup_seconds: float
    workload_seconds: float
    redis: dict[str, Any] | None = None
    tuning: list[dict[str, Any]] = field(default_factory=list)
    """The tuner's decisions, oldest first."""
    tuned: dict[str, Any] = field(default_factory=dict)
    """The tuner's settings at the end, and its windows."""
    warming: dict[str, Any] | None = None


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                    TimeElapsedColumn(), console=console)


@contextmanager
def _step(progress: Progress, text: str) -> Iterator[None]:
    task = progress.add_task(text, total=1, status="")
    yield
    progress.update(task, completed=1)


def _redis_info(app: Any, options: DemoOptions) -> dict[str, Any] | None:
    if app.cache.l3 is None:
        return None
    from ..redis_ops import RedisClusterManager

    manager = RedisClusterManager.for_cache(app.cache)
    try:
        report = manager.monitor_cluster()
        return {"url": options.redis_url, "label": options.redis_label, "mode": report.mode,
                "status": report.status, "nodes": len(report.nodes),
                "problems": list(report.problems)}
    finally:
        manager.close()


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoRun:
    """Run the whole demo; the cache's files live in a temporary directory."""
    console = console or Console()
    started = time.perf_counter()
    with ExitStack() as stack, _progress(console) as progress:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-demo-")))
        with _step(progress, "Loading all-MiniLM-L6-v2"):
            from .embedding import load_minilm

            load_minilm()
        with _step(progress, "Indexing the help centre"):
            from langchain_rag_cache import enable_rag_cache_handlers
            from llama_index_rag_cache import RagCacheEventHandler

            from .app import DemoApp

            app = DemoApp(workdir, redis_url=options.redis_url,
                          latency_scale=options.latency_scale,
                          l1_max_entries=options.l1_max_entries,
                          semantic_setting=options.semantic_setting)
            stack.callback(app.close)
        analytics = CacheAnalytics(
            app.cache, price_table={app.model.model_name: PRICE},
            store_path=workdir / "analytics.db", autostart=False, redis_publish=False)
        stack.callback(analytics.close, capture=False)
        # The engines hear the application through the frameworks' own callbacks:
        # LangChain runs (model calls, chains) and LlamaIndex events (retrievals).
        stack.callback(enable_rag_cache_handlers(app.llm_cache).disable)
        # Retrievals (from the retrieval cache or not) are reported on the answer
        # cache's bus, so analytics counts them beside the answers.
        stack.callback(RagCacheEventHandler.attach(app.cache).detach)
        tuner = make_tuner(app, analytics, options.window)
        stack.callback(tuner.close)
        warmer = DemoWarmer(app, workdir, {app.model.model_name: PRICE})
        stack.callback(warmer.close)
        startup = time.perf_counter() - started

        with _step(progress, f"Warming {len(FAQ)} FAQ answers"):
            faq = warmer.faq(list(FAQ))
            analytics.capture_snapshot()  # warming's own window, apart from the users'
        workload = build_workload(options.questions, options.seed, tuple(faq["questions"]))
        first, calls = len(analytics.history), app.model.calls
        outcomes = _ask_all(app, analytics, workload, options, progress)
        if len(outcomes) % options.window:
            analytics.capture_snapshot()  # the last, partial window
        windows = list(analytics.history)[first:]
        model_calls = app.model.calls - calls
        workload_seconds = time.perf_counter() - started - startup

        tuned = tuner_state(tuner)
        tuner.close()  # it judges the users' traffic, not the emptied cache that follows
        with _step(progress, f"Warming {LOG_BUDGET} answers from the log"):
            warmer.next_deploy()
        with _step(progress, "Writing the report"):
            report = None
            if options.report is not None:
                options.report.parent.mkdir(parents=True, exist_ok=True)
                report = analytics.write_report(options.report, title="rag-cache demo")
            else:
                analytics.capture_snapshot()
        snapshot = MetricSnapshot.merge(windows)
        redis = _redis_info(app, options)
        return DemoRun(
            options=options, outcomes=outcomes, snapshot=snapshot, windows=len(windows),
            health=analytics.calculate_health_score(snapshot),
            recommendations=analytics.get_recommendations(snapshot),
            alerts=analytics.store.alerts() if analytics.store else [],
            active_alerts=[a.rule for a in analytics.get_active_alerts()],
            report=report.resolve() if report else None, model_calls=model_calls,
            simulated_latency=(app.model.simulated_latency(0),
                               app.model.simulated_latency(1) - app.model.simulated_latency(0)),
            startup_seconds=startup, workload_seconds=workload_seconds, redis=redis,
            tuning=[d.to_dict() for d in tuner.history], tuned=tuned,
            warming=warmer.stats())


def _ask_all(app: Any, analytics: CacheAnalytics, workload: list[Ask], options: DemoOptions,
             progress: Progress) -> list[Outcome]:
    every = max(1, options.window)
    task = progress.add_task(f"Asking {len(workload)} questions", total=len(workload),
                             status="")
    # The status says who answered: the cache or the (simulated) model.
    outcomes: list[Outcome] = []
    cached = 0
    for ask in workload:
        t = time.perf_counter()
        answer = app.ask(ask.question)
        outcomes.append(Outcome(ask, answer.text, answer.cache, answer.tokens,
                                time.perf_counter() - t))
        cached += answer.cached
        if len(outcomes) % every == 0:
            analytics.capture_snapshot()
        progress.update(task, advance=1,
                        status=f"cache {cached}, model {len(outcomes) - cached}")
    return outcomes


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None
