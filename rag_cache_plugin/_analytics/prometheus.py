"""Prometheus export: a collector reading the engine's cumulative totals at
scrape time (nothing is kept twice), optionally served on its own port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .metrics import KINDS, OPS, TIERS, MetricSnapshot

__all__ = ["AnalyticsCollector"]

# Half-decade ``le`` edges from 1 us to 10,000 s: exact edges of the log histogram.
_EDGES = tuple(range(0, 201, 10))
_LOOKUP_OUTCOMES = ("l1", "l2", "l3", "semantic", "miss")
_CALLS = ("model", "embedding", "retrieval", "query", "chain", "tool")


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class AnalyticsCollector:
    """``registry.register(AnalyticsCollector(analytics.totals, extra))``."""

    def __init__(self, totals: Callable[[], MetricSnapshot],
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self._totals = totals
        self._extra = extra

    def describe(self) -> list[Metric]:
        return []  # skip the collect() a registry would run at register time

    def collect(self) -> Iterator[Metric]:
        s = self._totals()
        c = s.count
        lookups = _counter("rag_cache_lookups", "Cache lookups by tier, result and match kind.",
                           ("tier", "result", "kind"))
        for t in TIERS:
            for k in KINDS:
                lookups.add_metric([t, "hit", k], c(f"hits.{t}.{k}"))
        lookups.add_metric(["none", "miss", "none"], c("misses"))
        yield lookups
        yield self._simple("rag_cache_stores", "Answers stored.", c("stores"))
        for name, key, doc in (
                ("rag_cache_tier_writes", "stored", "Entries written, by tier."),
                ("rag_cache_evictions", "evictions", "Entries evicted for space, by tier."),
                ("rag_cache_expirations", "expirations", "Entries found expired, by tier."),
                ("rag_cache_tier_errors", "failures", "Failed tier operations, by tier."),
                ("rag_cache_corrupt_entries", "corrupt", "Undecodable entries, by tier.")):
            fam = _counter(name, doc, ("tier",))
            for t in TIERS:
                fam.add_metric([t], c(f"{key}.{t}"))
            yield fam
        yield self._simple("rag_cache_rejected", "Stores refused by a limit.", c("rejected"))
        yield self._simple("rag_cache_invalidations", "Tag invalidations.", c("invalidations"))
        fb = _counter("rag_cache_feedback", "Hit feedback reports.", ("kind", "correct"))
        for k in KINDS:
            fb.add_metric([k, "true"], c(f"feedback.{k}.ok"))
            fb.add_metric([k, "false"], c(f"feedback.{k}.wrong"))
        yield fb
        calls = _counter("rag_cache_calls", "Framework calls observed.", ("op", "cached"))
        errors = _counter("rag_cache_call_errors", "Framework calls that failed.", ("op",))
        for op in OPS:
            calls.add_metric([op, "true"], c(f"cached.{op}"))
            calls.add_metric([op, "false"], c(f"calls.{op}") - c(f"cached.{op}"))
            errors.add_metric([op], c(f"call_errors.{op}"))
        yield calls
        yield errors
        for verb in ("saved", "spent"):
            tokens = _counter(f"rag_cache_tokens_{verb}", f"Model tokens {verb}.", ("type",))
            for part in ("input", "output"):
                tokens.add_metric([part], c(f"{verb}.{part}_tokens"))
            yield tokens
            yield self._simple(f"rag_cache_cost_{verb}_usd", f"Model cost {verb}, US dollars.",
                               c(f"{verb}.cost"))
        yield self._simple("rag_cache_latency_saved_seconds",
                           "Model call time avoided by hits on priced entries, seconds.",
                           c("saved.model_latency"))
        yield self._histogram("rag_cache_lookup_duration_seconds",
                              "Lookup latency by outcome.", "outcome", _LOOKUP_OUTCOMES, s)
        yield self._histogram("rag_cache_store_duration_seconds", "Store latency.", None,
                              ("store",), s)
        yield self._histogram("rag_cache_call_duration_seconds",
                              "Uncached framework call latency (model = llm + chat).", "op",
                              _CALLS, s)
        yield from self._gauges(s)

    @staticmethod
    def _simple(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, value=value)

    @staticmethod
    def _histogram(name: str, doc: str, label: str | None, names: tuple[str, ...],
                   s: MetricSnapshot) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=[label] if label else [])
        for n in names:
            h = s.histograms.get(n)
            if h is None:
                continue
            buckets = [(repr(edge), float(n)) for edge, n in h.cumulative(_EDGES)]
            buckets.append(("+Inf", float(h.count)))
            fam.add_metric([n] if label else [], buckets, h.sum)
        return fam

    def _gauges(self, s: MetricSnapshot) -> Iterator[Metric]:
        g = s.gauges
        for name, doc in (("l1_bytes", "Bytes held by L1."), ("l1_max_bytes", "L1 byte bound."),
                          ("l1_entries", "Entries in L1."), ("l1_max_entries", "L1 entry bound."),
                          ("l2_bytes", "Bytes in the L2 file."), ("l2_entries", "Entries in L2.")):
            if name in g:
                yield GaugeMetricFamily(f"rag_cache_{name}", doc, value=g[name])
        breaker = GaugeMetricFamily("rag_cache_breaker_open", "1 while a tier's circuit is open.",
                                    labels=["tier"])
        for t in ("l2", "l3"):
            if g.get(f"{t}_enabled"):
                breaker.add_metric([t], g.get(f"{t}_breaker_open", 0.0))
        yield breaker
        if self._extra is not None:
            extra = self._extra()
            yield GaugeMetricFamily("rag_cache_health_score", "Health score, 0 to 100.",
                                    value=extra["health"])
            active = GaugeMetricFamily("rag_cache_alerts_active", "Alerts firing now.",
                                       labels=["severity"])
            for sev, n in sorted(extra["alerts"].items()):
                active.add_metric([sev], n)
            yield active
