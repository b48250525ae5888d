"""Running warming tasks: a concurrency limit, a timeout per attempt, retries with
exponential backoff, a budget on what is really spent, a progress bar, and a short
lock per key so no two tasks, here or in another process, compute one question.

A task holds its key's lock (the cache's single-flight machinery, with a lock of
its own beside the entry) from before it checks the tiers until its answer is
stored, so a peer that comes later finds the entry and skips it.  A refresh runs
the runner inside ``RagCache.bypass`` so a runner that reads through the cache
recomputes instead of returning the entry being refreshed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._tiers import Ref
from .probe import aprobe
from .recorder import METER, Meter
from .runner import Computed, Runner, to_value
from .stats import TaskResult, WarmingReport
from .tasks import Budget, WarmingTask

if TYPE_CHECKING:
    from .._analytics.prices import PriceTable
    from .._core import RagCache
    from .._flight import FlightTable
    from .writer import LogWriter

__all__ = ["Executor", "Retry"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Attempts per task: 1 + ``retries``, waiting ``backoff * 2**n`` (at most
    ``max_backoff``) seconds between them; each attempt is cut at ``timeout``."""

    retries: int = 2
    backoff: float = 0.5
    max_backoff: float = 10.0
    timeout: float = 60.0

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))

    @property
    def worst_case(self) -> float:
        """Seconds one task may take at most (its lock must outlive it)."""
        return self.timeout * (self.retries + 1) + sum(
            self.delay(a) for a in range(1, self.retries + 1))


class _Spend:
    """Spent so far plus what running tasks are expected to spend."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.cost = self.tokens = 0.0
        self.held_cost = self.held_tokens = 0.0
        self.started = 0

    def admit(self, t: WarmingTask) -> bool:
        b = self.budget
        if b.max_tasks is not None and self.started >= b.max_tasks:
            return False
        if b.max_cost is not None and (self.cost >= b.max_cost or self.cost + self.held_cost
                                       + t.est_cost > b.max_cost):
            return False
        if b.max_tokens is not None and (self.tokens >= b.max_tokens or self.tokens
                                         + self.held_tokens + t.est_tokens > b.max_tokens):
            return False
        self.started += 1
        self.held_cost += t.est_cost
        self.held_tokens += t.est_tokens
        return True

    def settle(self, t: WarmingTask, cost: float, tokens: int) -> None:
        self.held_cost -= t.est_cost
        self.held_tokens -= t.est_tokens
        self.cost += cost
        self.tokens += tokens


@contextlib.contextmanager
def _progress(enabled: bool | None, total: int) -> Iterator[Callable[[], None]]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total == 0:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        tid = bar.add_task("warming", total=total)
        yield lambda: bar.advance(tid)


class Executor:
    def __init__(self, cache: RagCache, writer: LogWriter, prices: PriceTable,
                 locks: FlightTable, *, concurrency: int, retry: Retry,
                 refresh_ahead: float, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.cache, self.writer, self.prices = cache, writer, prices
        self.locks = locks
        self.concurrency = concurrency
        self.retry = retry
        self.refresh_ahead = refresh_ahead
        self.clock = clock
        self.sleep = sleep

    async def run(self, tasks: Sequence[WarmingTask], runner: Runner, budget: Budget, *,
                  source: str, progress: bool | None) -> WarmingReport:
        report = WarmingReport(uuid.uuid4().hex[:12], self.clock(), source, len(tasks))
        done: dict[int, TaskResult] = {}
        sem = asyncio.Semaphore(self.concurrency)
        spend = _Spend(budget)
        with _progress(progress, len(tasks)) as advance:
            async def one(i: int, task: WarmingTask) -> None:
                async with sem:
                    done[i] = await self._one(task, runner, spend, report.run_id)
                advance()

            try:
                await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks)))
                report.status = "completed"
            except asyncio.CancelledError:
                report.status = "cancelled"
                raise
            finally:
                report.results = [done.get(i) or _result(t, "skipped", "cancelled")
                                  for i, t in enumerate(tasks)]
                report.finished = self.clock()
                await asyncio.shield(asyncio.to_thread(
                    self.writer.log.add_run, report.run_id, report.started, report.finished,
                    report.to_dict()))
        return report

    async def _one(self, task: WarmingTask, runner: Runner, spend: _Spend,
                   run_id: str) -> TaskResult:
        if not spend.admit(task):
            return _result(task, "skipped", "budget")
        ref = Ref(task.key, task.namespace, task.partition)
        result = _result(task, "skipped", "being warmed elsewhere")
        try:
            if await self.locks.atry_lead(ref):
                try:
                    result = await self._compute(task, ref, runner)
                finally:
                    await self.locks.arelease(ref)
            if result.status == "warmed":
                await self._track(task, result, run_id)
            return result
        finally:
            spend.settle(task, result.cost, result.input_tokens + result.output_tokens)

    async def _compute(self, task: WarmingTask, ref: Ref, runner: Runner) -> TaskResult:
        now = self.clock()
        before = await aprobe(self.cache, ref, now)
        if before is not None:
            if task.kind == "warm":
                return _result(task, "skipped", "cached")
            if before.expires is None or before.expires - now > \
                    self.refresh_ahead * (before.expires - before.created):
                return _result(task, "skipped", "fresh")  # refreshed by someone else
        meter = Meter()
        started = time.perf_counter()
        out: Any = None
        error: BaseException | None = None
        attempt = 0
        for attempt in range(1, self.retry.retries + 2):
            token = METER.set(meter)
            deadline = asyncio.timeout(self.retry.timeout)
            try:
                with (self.cache.bypass([task.key]) if before is not None
                      else contextlib.nullcontext()):
                    async with deadline:
                        out = await runner.run(task)
                error = None
            except TimeoutError as exc:  # ours, or the runner's own (say, an HTTP timeout)
                error = TimeoutError(f"timed out after {self.retry.timeout:g} s") \
                    if deadline.expired() else exc
            except Exception as exc:  # reported, never allowed to stop the run
                error = exc
            finally:
                METER.reset(token)
            if error is None:
                break
            if attempt <= self.retry.retries:
                await self.sleep(self.retry.delay(attempt))
        cost, tin, tout = self._usage(out if error is None else None, meter)
        base: dict[str, Any] = dict(attempts=attempt, cost=cost, input_tokens=tin,
                                    output_tokens=tout, latency=time.perf_counter() - started)
        if error is not None:
            return _result(task, "failed", f"{type(error).__name__}: {error}"[:500], **base)
        keys = tuple(dict.fromkeys(meter.stored))
        if keys:
            return _result(task, "warmed", stored_by="runner", keys=keys, **base)
        after = await aprobe(self.cache, ref, self.clock())
        if after is not None and (before is None or after.created != before.created):
            return _result(task, "warmed", stored_by="runner", keys=(task.key,), **base)
        if not task.addressable:
            return _result(task, "failed", "the runner did not fill the cache and the "
                           "question's context is unknown", **base)
        return await self._store(task, out, base)

    async def _store(self, task: WarmingTask, out: Any, base: dict[str, Any]) -> TaskResult:
        token = METER.set(Meter())  # our own store is warming, not a user's answer
        try:
            ok = await self.cache.astore(
                task.question, to_value(out), context=task.context, llm_string=task.llm_string,
                namespace=task.namespace, ttl=task.ttl, tags=task.tags or None)
        except ValueError as exc:
            return _result(task, "failed", f"answer not cached: {exc}"[:500], **base)
        finally:
            METER.reset(token)
        if not ok:
            return _result(task, "failed", "answer refused by a cache limit", **base)
        return _result(task, "warmed", stored_by="warmer", keys=(task.key,), **base)

    def _usage(self, out: Any, meter: Meter) -> tuple[float, int, int]:
        """(cost, input tokens, output tokens): what the runner said, else what the
        framework handlers reported while it ran."""
        if isinstance(out, Computed) and (out.input_tokens or out.output_tokens or out.cost):
            cost = out.cost if out.cost is not None else self.prices.cost(
                out.model, out.input_tokens, out.output_tokens)
            return cost or 0.0, out.input_tokens, out.output_tokens
        cost = 0.0
        tin = tout = 0
        for model, i, o in meter.usage():
            cost += self.prices.cost(model, i, o) or 0.0
            tin, tout = tin + i, tout + o
        return cost, tin, tout

    async def _track(self, task: WarmingTask, r: TaskResult, run_id: str) -> None:
        """Count later hits on what this task wrote; each key carries its share of
        the task's cost (what a hit on it saves)."""
        at = self.clock()
        n = len(r.keys)
        mark = self.writer.recorder.mark()
        rows = [(k, task.namespace, run_id, at, r.cost / n, r.latency / n) for k in r.keys]
        await asyncio.to_thread(self.writer.warmed, rows, mark)


def _result(task: WarmingTask, status: Any, reason: str = "", **kw: Any) -> TaskResult:
    return TaskResult(task.question, task.key, task.namespace, task.kind, status, reason, **kw)
