"""Analytics numbers from a real RagCache (memory + a real SQLite file) under a
known workload: hit rates per tier and kind, savings from a price table,
percentiles within histogram precision, exact counts across threads."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _analytics_helpers import AliasSemantic, compute

from rag_cache_plugin import CacheConfig, CallCompleted, Hit, RagCache
from rag_cache_plugin import analytics as analytics_module
from rag_cache_plugin.analytics import (
    DEFAULT_PRICES,
    PRECISION,
    PRICES_AS_OF,
    CacheAnalytics,
    LogHistogram,
    MetricSnapshot,
    PriceTable,
)

PRICES = {"model-a": (3.0, 15.0), "model-b": (0.5, 1.5)}


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[RagCache]:
    with RagCache(CacheConfig(sqlite_path=tmp_path / "cache.db")) as c:
        yield c


@pytest.fixture
def analytics(cache: RagCache, tmp_path: Path) -> Iterator[CacheAnalytics]:
    a = CacheAnalytics(cache, autostart=False, price_table=PRICES,
                       store_path=tmp_path / "analytics.db")
    yield a
    a.close(capture=False)


def test_public_names_are_pinned() -> None:
    assert analytics_module.__all__ == [
        "DEFAULT_PRICES", "DEFAULT_RULES", "METRIC_NAMES", "PRECISION", "PRICES_AS_OF",
        "AlertEvent", "AlertManager", "AlertRule", "CacheAnalytics", "EntryCost",
        "HealthFactor", "HealthScore", "LogHistogram", "MetricSnapshot", "ModelPrice",
        "PriceTable", "Recommendation", "Severity", "SnapshotStore", "default_store_path",
        "health_score", "read_fleet", "recommend"]


def test_known_workload_numbers_are_exact(cache: RagCache, analytics: CacheAnalytics) -> None:
    assert analytics.bus is cache.bus
    cache.semantic = AliasSemantic(cache, {"whats retrieval augmented generation": "What is RAG?"})
    compute(cache, "What is RAG?", "Retrieval-augmented generation.", model="model-a",
            input_tokens=1200, output_tokens=300, latency=1.5)
    compute(cache, "Define embeddings", "Vectors.", model="model-b", input_tokens=800,
            output_tokens=200, latency=0.8)
    compute(cache, "Who wrote Dune?", "Frank Herbert.", model="model-a", input_tokens=500,
            output_tokens=100, latency=0.6)
    for q in ["What is RAG?"] * 4 + ["Define embeddings"] * 2:
        hit = cache.lookup(q)
        assert hit is not None and (hit.tier, hit.kind) == ("l1", "exact")
    for _ in range(2):
        hit = cache.lookup("whats retrieval augmented generation")
        assert hit is not None and (hit.tier, hit.kind) == ("l1", "semantic")
    cache.l1.clear()
    hit = cache.lookup("Who wrote Dune?")
    assert hit is not None and hit.tier == "l2"
    hit = cache.lookup("Who wrote Dune?")
    assert hit is not None and hit.tier == "l1"  # promoted
    assert cache.lookup("Unknown one") is None
    assert cache.lookup("Unknown two") is None
    for _ in range(2):  # a framework answered from its cache marks
        cache.bus.emit(CallCompleted(cache.namespace, "", "chat", 0.001, model="model-a",
                                     cached=True))

    s = analytics.capture_snapshot()
    assert s.lookups == 15
    assert (s.hits("l1", "exact"), s.hits("l1", "semantic"), s.hits("l2", "exact")) == (7, 2, 1)
    assert s.hits("l3") == 0 and s.count("misses") == 5
    assert s.hit_rate() == pytest.approx(10 / 15)
    assert s.hit_rate("l1") == pytest.approx(9 / 15)
    assert s.hit_rate("l2") == pytest.approx(1 / 15)
    assert s.hit_rate(kind="exact") == pytest.approx(8 / 15)
    assert s.hit_rate(kind="semantic") == pytest.approx(2 / 15)
    m = s.metrics()
    # 6 hits on model-a 1200/300, 2 on model-b 800/200, 2 on model-a 500/100
    assert s.count("saved.input_tokens") == 6 * 1200 + 2 * 800 + 2 * 500
    assert s.count("saved.output_tokens") == 6 * 300 + 2 * 200 + 2 * 100
    assert s.tokens_saved == 12_200
    expected = (6 * (1200 * 3 + 300 * 15) + 2 * (800 * 0.5 + 200 * 1.5)
                + 2 * (500 * 3 + 100 * 15)) / 1e6
    assert s.cost_saved == pytest.approx(expected, rel=1e-12)
    assert m["cost_saved"] == pytest.approx(0.056, rel=1e-12)
    assert s.latency_saved == pytest.approx(6 * 1.5 + 2 * 0.8 + 2 * 0.6, abs=0.01)
    assert m["unpriced_hits"] == 0
    assert m["cost_spent"] == pytest.approx((1200 * 3 + 300 * 15 + 800 * 0.5 + 200 * 1.5
                                             + 500 * 3 + 100 * 15) / 1e6)
    assert (m["model_calls"], m["cached_calls"]) == (3, 2)
    assert m["stores"] == 3 and s.count("stored.l2") == 3
    assert m["l1_entries"] == 1 and m["l2_entries"] == 3 and m["l2_bytes"] > 0
    assert [q for q, _ in s.top_missed] == sorted(
        ["What is RAG?", "Define embeddings", "Who wrote Dune?", "Unknown one", "Unknown two"])
    for name in ("l1_p50", "l1_p99", "l2_p50", "miss_p95", "semantic_p50", "model_p50"):
        assert m[name] is not None and m[name] > 0, name
    # The next window starts empty; the snapshot went to the store.
    assert analytics.capture_snapshot().lookups == 0
    stored = analytics.get_metrics_history()
    assert [x.lookups for x in stored] == [15, 0]
    assert MetricSnapshot.merge(stored).cost_saved == pytest.approx(expected)


def test_percentiles_within_histogram_precision(analytics: CacheAnalytics) -> None:
    rng = random.Random(7)
    model = sorted(10 ** rng.uniform(-1, 1.3) for _ in range(2000))  # 0.1 s .. 20 s
    lookups = sorted(10 ** rng.uniform(-6, -2) for _ in range(3000))  # 1 us .. 10 ms
    for lat in rng.sample(model, len(model)):
        analytics.bus.emit(CallCompleted("ns", "", "llm", lat, model="model-a"))
    for lat in lookups:
        analytics.bus.emit(Hit("ns", "k", "l2", "exact", lat))

    def exact(values: list[float], q: float) -> float:
        return values[max(1, math.ceil(q / 100 * len(values))) - 1]

    s = analytics.capture_snapshot()
    for q in (50, 95, 99):
        assert s.percentile("model", q) == pytest.approx(exact(model, q), rel=PRECISION)
        assert s.percentile("l2", q) == pytest.approx(exact(lookups, q), rel=PRECISION)
    assert s.histograms["model"].sum == pytest.approx(math.fsum(model))
    # Histograms merge across processes by adding counts: same answer as one histogram.
    a, b = LogHistogram(), LogHistogram()
    for i, v in enumerate(model):
        (a if i % 2 else b).record(v)
    a.merge(b)
    assert a.counts == s.histograms["model"].counts


def test_counts_stay_exact_across_threads(cache: RagCache, analytics: CacheAnalytics) -> None:
    for i in range(8):
        cache.store(f"q{i}", i)
    n, threads = 3000, 4

    def work() -> None:
        for j in range(n):
            assert cache.lookup(f"q{j % 8}") is not None
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    mid = analytics.capture_snapshot()  # reading while threads record
    for t in pool:
        t.join()
    end = analytics.capture_snapshot()
    assert mid.hits("l1") + end.hits("l1") == n * threads
    # Finished threads were folded; the main thread (which stored) keeps its shard.
    assert [x.thread for x in analytics.recorder.shards] == [threading.current_thread()]


def test_two_engines_and_hit_listeners_each_count_every_hit_once(
        cache: RagCache, analytics: CacheAnalytics, tmp_path: Path) -> None:
    """The first engine records hits through the bus's hit log; a second engine on the
    same cache takes them as events, and a ``Hit`` listener beside them (as the tuner
    and the warmer are) changes neither count."""
    cache.store("q", 1)
    second = CacheAnalytics(cache, autostart=False, store_path=tmp_path / "second.db")
    try:
        assert cache.bus.hit_log is analytics.recorder.hits
        for _ in range(5):
            cache.lookup("q")
        seen: list[Hit] = []
        unsubscribe = cache.bus.subscribe(seen.append, (Hit,))
        for _ in range(7):
            cache.lookup("q")
        unsubscribe()
        cache.lookup("q")
        assert len(seen) == 7
        assert analytics.capture_snapshot().hits("l1") == 13
        assert second.capture_snapshot().hits("l1") == 13
    finally:
        second.close(capture=False)
    analytics.close(capture=False)
    assert cache.bus.hit_log is None and not cache.bus.active


def test_savings_pairing_by_key_question_or_latest(cache: RagCache,
                                                   analytics: CacheAnalytics) -> None:
    key = cache.ref("by key").key
    bus = cache.bus
    # A handler that knows the entry key says so; another only knows the question.
    bus.emit(CallCompleted(cache.namespace, key, "llm", 1.0, model="model-a", input_tokens=100))
    bus.emit(CallCompleted(cache.namespace, "", "llm", 1.0, model="model-b",
                           input_tokens=1000, question="BY QUESTION"))
    # A chat handler whose "question" is the whole prompt: paired as the newest call.
    bus.emit(CallCompleted(cache.namespace, "", "chat", 1.0, model="model-b",
                           input_tokens=10, question='[{"role":"user","content":"x"}]'))
    cache.store("by question", "v")  # the canonical form matches "BY QUESTION"
    cache.store("by key", "v")
    cache.store("by order", "v")
    cache.store("never computed", "v")
    for q in ("by key", "by question", "by order", "never computed"):
        assert cache.lookup(q) is not None
    costs = analytics.costs.costs
    assert costs[key].input_tokens == 100
    assert costs[cache.ref("by question").key].input_tokens == 1000
    assert costs[cache.ref("by order").key].input_tokens == 10
    s = analytics.capture_snapshot()
    assert s.count("saved.input_tokens") == 1110
    assert s.metrics()["unpriced_hits"] == 1
    analytics.record_cost(cache.ref("never computed").key, model="model-b", input_tokens=2_000,
                          output_tokens=0, latency=2.0)
    cache.lookup("never computed")
    assert analytics.capture_snapshot().cost_saved == pytest.approx(2_000 * 0.5 / 1e6)


def test_price_table() -> None:
    table = PriceTable({"acme-1": (1.0, 2.0)})
    assert table.cost("acme-1", 1_000_000, 500_000) == pytest.approx(2.0)
    assert table.cost("gpt-4o", 1, 1) is None  # defaults are off when a table is given
    both = PriceTable({"acme-1": {"input": 1, "output": 2}}, defaults=True)
    assert both.cost("openai/gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(
        DEFAULT_PRICES["gpt-4o-mini"].input)
    assert both.lookup("gpt-4-0613") == DEFAULT_PRICES["gpt-4"]
    assert both.lookup("claude-3-5-sonnet-20241022") == DEFAULT_PRICES["claude-3-5-sonnet"]
    assert both.lookup("nobody-knows") is None
    assert PRICES_AS_OF[:4].isdigit()


def test_savings_pairing_when_the_answer_is_stored_before_the_call_is_reported(
        cache: RagCache, analytics: CacheAnalytics) -> None:
    # LangChain chat models update the cache before their callbacks report the call.
    cache.store("chat first", "v")
    cache.bus.emit(CallCompleted(cache.namespace, "", "chat", 2.0, model="model-a",
                                 input_tokens=50, question='[{"type":"human"}]'))
    assert analytics.costs.costs[cache.ref("chat first").key].input_tokens == 50
    # Too far apart, and nothing else in common: no guess.
    analytics.costs.fallback_window = 0.0
    cache.store("lonely", "v")
    cache.bus.emit(CallCompleted(cache.namespace, "", "chat", 2.0, model="model-a",
                                 input_tokens=70))
    assert cache.ref("lonely").key not in analytics.costs.costs
    # Cached calls and failed calls never pair.
    cache.store("third", "v")
    cache.bus.emit(CallCompleted(cache.namespace, "", "chat", 0.0, model="m", cached=True))
    cache.bus.emit(CallCompleted(cache.namespace, "", "chat", 0.0, model="m", error="boom"))
    assert cache.ref("third").key not in analytics.costs.costs
    s = analytics.capture_snapshot()
    assert s.count("call_errors.chat") == 1 and s.count("cached.chat") == 1
    assert s.metrics()["model_error_rate"] == pytest.approx(1 / 3)


def test_background_thread_captures_and_close_stops_it(tmp_path: Path) -> None:
    with RagCache(CacheConfig()) as cache:
        analytics = CacheAnalytics(cache, interval=0.2, store_path=tmp_path / "a.db")
        cache.store("q", "v")
        for _ in range(10):
            cache.lookup("q")
        deadline = time.monotonic() + 10
        while len(analytics.history) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(analytics.history) >= 2
        thread = analytics._thread
        analytics.close()
        assert thread is not None and not thread.is_alive()
        assert sum(s.hits() for s in analytics.history) == 10
        assert not cache.bus.active  # unsubscribed


async def test_async_lookups_are_counted(analytics: CacheAnalytics, cache: RagCache) -> None:
    await cache.astore("q", "v")
    for _ in range(3):
        assert await cache.alookup("q") is not None
    assert await cache.alookup("nope") is None
    s = analytics.capture_snapshot()
    assert (s.hits("l1"), s.count("misses"), s.count("stores")) == (3, 1, 1)


def test_overhead_benchmark_runs(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_analytics_overhead",
        Path(__file__).resolve().parents[1] / "benchmarks" / "bench_analytics_overhead.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--rounds", "2", "--lookups", "500", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "analytics_overhead.json").read_text())
    assert result["hits_counted_exactly"] is True
    assert "analytics on" in (tmp_path / "analytics_overhead.md").read_text()
