"""Cache warming on the real tiers (memory + a SQLite file), an injected clock and
deterministic runners: the log, ranking within a budget, the hit-rate change, the
concurrency limit, retries, refresh-ahead, statistics and ROI."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _warming_helpers import (
    PRICES,
    Clock,
    CountingRunner,
    ReadThroughRunner,
    Workload,
    answer,
    cost_of,
    tokens_of,
)

from rag_cache_plugin import CacheConfig, QueryObserved, RagCache, Stored
from rag_cache_plugin.warming import Budget, CacheWarmer, Retry, Scoring, default_log_path

# Asked 6, 5, 4, 3, 2 times and once each: the first occurrence of each one misses.
WORKLOAD = (["How do I reset my password?"] * 6 + ["What is the refund policy?"] * 5
            + ["Where is my order?"] * 4 + ["How do I change my email?"] * 3
            + ["Do you ship abroad?"] * 2 + ["Can I pay with PayPal?", "Who are you?"])
TOP = ["How do I reset my password?", "What is the refund policy?", "Where is my order?"]
TTL = 3600.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(tmp_path: Path, clock: Clock) -> Iterator[RagCache]:
    c = RagCache(CacheConfig(sqlite_path=tmp_path / "cache.db", ttl=TTL), clock=clock)
    yield c
    c.close()


@pytest.fixture
async def acache(tmp_path: Path, clock: Clock) -> AsyncIterator[RagCache]:
    """For async tests: closed on their event loop (its L2 connection included)."""
    c = RagCache(CacheConfig(sqlite_path=tmp_path / "cache.db", ttl=TTL), clock=clock)
    yield c
    await c.aclose()


def make_warmer(cache: RagCache, **kw: object) -> CacheWarmer:
    kw.setdefault("flush_interval", None)
    kw.setdefault("price_table", PRICES)
    kw.setdefault("retry", Retry(retries=2, backoff=0.25, timeout=5.0))
    return CacheWarmer(cache, **kw)  # type: ignore[arg-type]


def test_the_log_beside_l2_counts_decays_and_tracks_answer_changes(
        cache: RagCache, clock: Clock, tmp_path: Path) -> None:
    warmer = make_warmer(cache, scoring=Scoring(half_life=600.0))
    assert warmer.log.path == tmp_path / "cache.warming.db" == default_log_path(
        tmp_path / "cache.db")
    Workload(cache).run(WORKLOAD)
    q = "How do I reset my password?"
    # Recomputed twice more: the same answer, then a different one.
    cache.store(q, answer(q))
    cache.store(q, answer(q, 2))
    patterns = {p.question: p for p in warmer.analyze_query_patterns()}
    p = patterns[q]
    assert (p.total, p.hits, p.misses, p.count) == (6, 5, 1, pytest.approx(6.0))
    assert p.cached and p.expires == clock() + TTL
    # 3 stores = 2 recomputations, one changed the answer: (1 + 3) / (2 + 4).
    assert p.stability == pytest.approx(4 / 6)
    assert patterns["Where is my order?"].stability == pytest.approx(3 / 4)  # never recomputed
    clock.advance(600.0)  # one half-life
    again = {p.question: p for p in warmer.analyze_query_patterns()}
    assert again[q].count == pytest.approx(3.0)
    assert [p.question for p in warmer.analyze_query_patterns()][:3] == TOP
    warmer.close()
    # Persisted: a new warmer on the same file knows it.
    with make_warmer(cache) as fresh:
        assert {p.question for p in fresh.analyze_query_patterns()} == set(WORKLOAD)


def test_query_observed_pairs_with_its_lookup_and_carries_cost(cache: RagCache) -> None:
    warmer = make_warmer(cache)
    q, ctx, llm = "Summarise the report", '[{"role":"system"}]', "model-a|t=0"
    assert cache.lookup(q, context=ctx, llm_string=llm) is None
    tin, tout = tokens_of(q)
    cache.bus.emit(QueryObserved("default", "", q, 2.5, ctx, llm, "model-a", tin, tout))
    cache.store(q, answer(q), context=ctx, llm_string=llm)
    # Observed by a framework only (no cache lookup): counted on its own.
    cache.bus.emit(QueryObserved("default", "", "Another one", 1.0, "", "", "model-a", 10, 5))
    patterns = {p.question: p for p in warmer.analyze_query_patterns()}
    p = patterns[q]
    assert p.total == 1 and p.latency == 2.5 and p.cost == pytest.approx(cost_of(q))
    assert (p.context, p.llm_string, p.key) == (ctx, llm, cache.ref(
        q, context=ctx, llm_string=llm).key)
    assert patterns["Another one"].total == 1
    warmer.close()


async def test_warming_preloads_the_top_questions_and_the_hit_rate_rises(
        acache: RagCache, clock: Clock) -> None:
    warmer = make_warmer(acache, budget=Budget(max_tasks=3), scoring=Scoring(half_life=3600.0))
    work = Workload(acache)
    assert work.run(WORKLOAD) == (15, 7)  # every distinct question misses once
    clock.advance(TTL + 1)  # everything expired
    tasks = warmer.create_warming_tasks()
    assert [t.question for t in tasks] == TOP and {t.kind for t in tasks} == {"warm"}
    assert [t.score for t in tasks] == sorted((t.score for t in tasks), reverse=True)
    runner = CountingRunner()
    report = await warmer.execute_warming(tasks, runner=runner)
    assert sorted(runner.calls) == sorted(TOP)
    assert (report.warmed, report.skipped, report.failed) == (3, 0, 0)
    assert {r.stored_by for r in report.results} == {"warmer"}
    # The same workload again: the warmed questions hit where they missed before.
    assert work.run(WORKLOAD) == (18, 4)
    stats = warmer.get_warming_stats()
    cost = sum(cost_of(q) for q in TOP)
    assert (stats.runs, stats.warmed, stats.failed) == (1, 3, 0)
    assert stats.cost == pytest.approx(cost, rel=1e-12)
    assert stats.input_tokens == sum(tokens_of(q)[0] for q in TOP)
    # Hits on warmed entries: 6 + 5 + 4, each saving what computing its entry cost.
    saved = sum(WORKLOAD.count(q) * cost_of(q) for q in TOP)
    assert stats.hits == 15
    assert stats.saved_cost == pytest.approx(saved, rel=1e-12)
    assert stats.roi == pytest.approx(saved / cost, rel=1e-12)
    # A user's own answer replacing a warmed entry ends its count.
    acache.store(TOP[0], "edited by hand")
    Workload(acache).run([TOP[0], TOP[1]])
    assert warmer.get_warming_stats().hits == 16
    warmer.close()


def greedy(items: list[tuple[str, float]], limit: float) -> list[str]:
    out, used = [], 0.0
    for q, x in items:
        if used + x <= limit:
            out.append(q)
            used += x
    return out


async def test_budget_in_tokens_and_dollars(acache: RagCache, clock: Clock) -> None:
    warmer = make_warmer(acache, scoring=Scoring(half_life=3600.0), concurrency=1)
    for q in WORKLOAD:  # computed through a framework: the log knows each one's cost
        tin, tout = tokens_of(q)
        if acache.lookup(q) is None:
            acache.bus.emit(QueryObserved("default", "", q, 1.0, "", "", "model-a", tin, tout))
            acache.store(q, answer(q))
    clock.advance(TTL + 1)
    ranked = [t.question for t in warmer.create_warming_tasks(budget=Budget(max_tasks=None))]
    assert ranked[:3] == TOP
    limit = sum(tokens_of(TOP[0])) + sum(tokens_of(TOP[2]))
    planned = warmer.create_warming_tasks(budget=Budget(max_tasks=None, max_tokens=limit))
    assert [t.question for t in planned] == greedy(
        [(q, sum(tokens_of(q))) for q in ranked], limit)
    assert [t.est_tokens for t in planned] == [sum(tokens_of(t.question)) for t in planned]
    dollars = cost_of(TOP[0]) * 1.5
    planned = warmer.create_warming_tasks(budget=Budget(max_tasks=None, max_cost=dollars))
    assert [t.question for t in planned] == greedy([(q, cost_of(q)) for q in ranked], dollars)
    # At run time what was really spent counts: once it reaches the limit, nothing
    # else starts (questions from a list have no estimate; one runs at a time here).
    report = await warmer.warm_questions(
        ["first", "second", "third"], runner=CountingRunner(),
        budget=Budget(max_tasks=None, max_cost=cost_of("first") / 2))
    assert [r.status for r in report.results] == ["warmed", "skipped", "skipped"]
    assert report.results[1].reason == "budget"
    warmer.close()


async def test_concurrency_never_exceeds_the_limit(acache: RagCache) -> None:
    warmer = make_warmer(acache, concurrency=3)
    runner = CountingRunner(delay=0.02)
    questions = [f"question number {i}" for i in range(12)]
    report = await warmer.warm_questions(questions, runner=runner, progress=True)
    assert report.warmed == 12 and len(runner.calls) == 12
    assert runner.max_in_flight == 3
    warmer.close()


async def test_a_failing_runner_is_retried_then_reported_without_stopping_the_run(
        acache: RagCache) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    warmer = make_warmer(acache, concurrency=1, sleep=sleep,
                         retry=Retry(retries=2, backoff=0.25, timeout=0.2))
    runner = CountingRunner(fail={"broken": 99, "flaky": 2}, hang=["stuck"])
    report = await warmer.warm_questions(["ok 1", "broken", "flaky", "stuck", "ok 2"],
                                         runner=runner)
    by_q = {r.question: r for r in report.results}
    assert [r.question for r in report.results] == ["ok 1", "broken", "flaky", "stuck", "ok 2"]
    assert (by_q["broken"].status, by_q["broken"].attempts) == ("failed", 3)
    assert "RuntimeError: model unavailable" in by_q["broken"].reason
    assert (by_q["flaky"].status, by_q["flaky"].attempts) == ("warmed", 3)
    assert (by_q["stuck"].status, by_q["stuck"].attempts) == ("failed", 3)
    assert "timed out after 0.2 s" in by_q["stuck"].reason
    assert by_q["ok 2"].status == "warmed" and runner.calls.count("broken") == 3
    assert waits == [0.25, 0.5] * 3  # exponential backoff between attempts
    assert (report.warmed, report.failed) == (3, 2)
    assert [f.question for f in report.failures] == ["broken", "stuck"]
    assert acache.lookup("flaky").value == answer("flaky")  # type: ignore[union-attr]
    assert acache.lookup("broken") is None
    assert warmer.get_warming_stats().failed == 2
    warmer.close()


async def test_refresh_ahead_recomputes_a_hot_entry_before_its_ttl_ends(
        acache: RagCache, clock: Clock) -> None:
    warmer = make_warmer(acache, scoring=Scoring(half_life=3600.0, refresh_ahead=0.2))
    hot, cold = "What are your opening hours?", "Is there parking?"
    work = Workload(acache)
    work.run([hot] * 8 + [cold])
    created = clock()
    clock.advance(TTL * 0.5)  # half way: nothing due
    assert warmer.create_warming_tasks() == []
    clock.advance(TTL * 0.35)  # 85 % of the lifetime: the hot one is due, the cold one not
    tasks = warmer.create_warming_tasks()
    assert [(t.question, t.kind, t.ttl) for t in tasks] == [(hot, "refresh", TTL)]
    # A runner that reads through the cache must still recompute (bypass), not hit.
    runner = ReadThroughRunner(acache, version=2)
    report = await warmer.execute_warming(tasks, runner=runner)
    assert runner.computed == [hot] and report.refreshed == 1
    assert report.results[0].stored_by == "runner"
    hit = acache.lookup(hot)
    assert hit is not None and hit.value == answer(hot, 2)
    assert hit.expires == pytest.approx(clock() + TTL) and hit.expires > created + TTL
    clock.advance(TTL * 0.3)  # past the old expiry: the hot one still hits
    assert work.run([hot, cold]) == (1, 1)
    # Refreshing changed the answer: the log saw it.
    p = {p.question: p for p in warmer.analyze_query_patterns()}[hot]
    assert p.stability == pytest.approx(3 / 5)
    warmer.close()


async def test_a_refresh_someone_else_did_is_skipped(acache: RagCache, clock: Clock) -> None:
    warmer = make_warmer(acache, scoring=Scoring(half_life=3600.0))
    Workload(acache).run(["hot question"] * 5)
    clock.advance(TTL * 0.9)
    tasks = warmer.create_warming_tasks()
    acache.store("hot question", "fresh from a user")  # a new entry with a full TTL
    report = await warmer.execute_warming(tasks, runner=CountingRunner())
    assert [(r.status, r.reason) for r in report.results] == [("skipped", "fresh")]
    warmer.close()


async def test_cached_questions_are_skipped_and_file_questions_warm(
        acache: RagCache, tmp_path: Path) -> None:
    warmer = make_warmer(acache)
    acache.store("Already here", "yes")
    (tmp_path / "faq.txt").write_text("# our FAQ\nAlready here\n\nNew one\nnew one?\n")
    runner = CountingRunner()
    report = await warmer.warm_file(tmp_path / "faq.txt", runner=runner)
    # "new one?" is "New one" canonically: one task.
    assert [(r.question, r.status, r.reason) for r in report.results] == [
        ("Already here", "skipped", "cached"), ("New one", "warmed", "")]
    assert report.source == "file:faq.txt" and runner.calls == ["New one"]
    (tmp_path / "faq.jsonl").write_text(
        '"From JSONL"\n{"question": "With context", "context": "sys: be brief"}\n')
    await warmer.warm_file(tmp_path / "faq.jsonl", runner=runner)
    assert acache.lookup("With context", context="sys: be brief") is not None
    assert acache.lookup("With context") is None
    warmer.close()


async def test_no_double_store_when_the_runner_fills_the_cache(acache: RagCache) -> None:
    warmer = make_warmer(acache)
    stores: list[Stored] = []
    acache.bus.subscribe(stores.append, (Stored,))
    report = await warmer.warm_questions(["q one", "q two"], runner=ReadThroughRunner(acache))
    assert [r.stored_by for r in report.results] == ["runner", "runner"]
    assert sorted(s.question for s in stores) == ["q one", "q two"]
    warmer.close()


def test_a_schedule_runs_periodically_and_stops_cleanly(cache: RagCache, clock: Clock) -> None:
    warmer = make_warmer(cache, scoring=Scoring(half_life=3600.0, min_expected_hits=0.0))
    Workload(cache).run(WORKLOAD)
    clock.advance(TTL + 1)
    runner = CountingRunner()
    schedule = warmer.schedule_warming(0.05, runner=runner)
    assert schedule.wait_for_runs(2, timeout=60)
    assert schedule.stop() and not schedule.running
    runs = warmer.get_run_history()
    assert len(runs) >= 2 and {r.source for r in runs} == {"schedule"}
    assert runs[0].warmed == len(set(WORKLOAD)) and runs[1].warmed == 0  # all cached by then
    assert sorted(set(runner.calls)) == sorted(set(WORKLOAD))
    warmer.close()


def test_stopping_cancels_a_run_in_progress_and_releases_its_locks(cache: RagCache,
                                                                     clock: Clock) -> None:
    warmer = make_warmer(cache, scoring=Scoring(half_life=3600.0, min_expected_hits=0.0),
                         concurrency=2)
    Workload(cache).run(WORKLOAD)
    clock.advance(TTL + 1)
    runner = CountingRunner(hang=set(WORKLOAD))
    schedule = warmer.schedule_warming(60.0, runner=runner)
    for _ in range(2000):
        if runner.in_flight == 2:
            break
        time.sleep(0.005)
    assert runner.in_flight == 2
    assert schedule.stop(timeout=30)
    (run,) = warmer.get_run_history()
    assert run.status == "cancelled" and run.warmed == 0
    assert {r.reason for r in run.results} == {"cancelled"}
    assert len(warmer.locks) == 0
    warmer.close()


def test_rate_estimate_of_a_young_log() -> None:
    from rag_cache_plugin._warming.patterns import observed_window
    from rag_cache_plugin._warming.rows import Row

    rows = [Row("k", "ns", "p", "q", "q", first_seen=0.0)]
    assert observed_window(rows, 100.0, 1e9) == pytest.approx(100.0)
    tau = 600 / math.log(2)
    assert observed_window(rows, 1e9, 600.0) == pytest.approx(tau)
