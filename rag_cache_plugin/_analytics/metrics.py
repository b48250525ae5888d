"""``MetricSnapshot``: what the cache did during one interval, and the numbers
derived from it (hit rates, percentiles, error rates, savings).

Counters and histograms are plain sums, so snapshots merge across threads,
processes, hosts and time; gauges (L1 bytes, L2 size, breaker states) are
readings: the newest per process wins, then processes add up (L1, one each) or
take the largest (L2, one file shared on a host).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .histogram import LogHistogram

__all__ = ["METRIC_NAMES", "TIERS", "MetricSnapshot"]

TIERS = ("l1", "l2", "l3")
KINDS = ("exact", "semantic")
OPS = ("llm", "chat", "embedding", "retrieval", "query", "chain", "tool")
LATENCIES = ("l1", "l2", "l3", "semantic", "miss", "store",
             "model", "embedding", "retrieval", "query", "chain", "tool")
"""Histogram names: hits per tier (exact), semantic hits, misses, stores, and
uncached framework calls ("model" is op llm + chat)."""


def _metric_names() -> tuple[str, ...]:
    names = ["lookups", "hits", "misses", "hit_rate", "exact_hit_rate", "semantic_hit_rate",
             "throughput", "stores", "l1_memory_ratio", "l1_fill", "l1_bytes", "l1_entries",
             "l2_bytes", "l2_entries", "evictions", "expirations", "l1_eviction_rate",
             "false_hit_reports", "false_hit_rate", "tokens_saved", "cost_saved",
             "latency_saved", "unpriced_hits", "cost_spent", "model_calls", "cached_calls",
             "model_error_rate", "lookup_p50", "lookup_p95", "lookup_p99"]
    for t in TIERS:
        names += [f"{t}_hit_rate", f"{t}_error_rate", f"{t}_breaker_open",
                  f"{t}_evictions", f"{t}_expirations"]
    for h in LATENCIES:
        names += [f"{h}_p50", f"{h}_p95", f"{h}_p99"]
    return tuple(dict.fromkeys(names))


METRIC_NAMES = _metric_names()
"""Every name ``MetricSnapshot.metrics()`` returns (what alert rules refer to)."""


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _summed_gauges(snaps: Iterable[MetricSnapshot]) -> dict[str, float]:
    latest: dict[str, MetricSnapshot] = {}
    for s in snaps:
        if s.proc not in latest or s.ts >= latest[s.proc].ts:
            latest[s.proc] = s
    out: dict[str, float] = {}
    for s in latest.values():
        for name, value in s.gauges.items():
            if name.startswith("l1_"):
                out[name] = out.get(name, 0.0) + value
            else:  # L2 is one file per host; states and settings: the worst/largest
                out[name] = max(out.get(name, value), value)
    return out


@dataclass(slots=True)
class MetricSnapshot:
    """Counts over ``[ts - interval, ts]`` (seconds since the epoch) for one process
    (``proc``) or, after ``merge``, for several (``proc == "*"``)."""

    ts: float
    interval: float
    proc: str = ""
    host: str = ""
    pid: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, LogHistogram] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    top_missed: list[tuple[str, int]] = field(default_factory=list)
    last_errors: dict[str, str] = field(default_factory=dict)
    processes: int = 1

    # -- raw access -----------------------------------------------------------------

    def count(self, name: str) -> float:
        return self.counters.get(name, 0.0)

    def hits(self, tier: str | None = None, kind: str | None = None) -> int:
        tiers = TIERS if tier is None else (tier,)
        kinds = KINDS if kind is None else (kind,)
        return int(sum(self.count(f"hits.{t}.{k}") for t in tiers for k in kinds))

    @property
    def lookups(self) -> int:
        return self.hits() + int(self.count("misses"))

    def hit_rate(self, tier: str | None = None, kind: str | None = None) -> float | None:
        """Share of all lookups answered by ``tier`` and/or ``kind`` (None: no lookups)."""
        return _ratio(self.hits(tier, kind), self.lookups)

    def percentile(self, name: str, q: float) -> float | None:
        h = self.histograms.get(name)
        return None if h is None else h.percentile(q)

    def latency(self, *names: str) -> LogHistogram:
        """The named histograms merged (all lookup outcomes when none is named)."""
        out = LogHistogram()
        for n in names or ("l1", "l2", "l3", "semantic", "miss"):
            if n in self.histograms:
                out.merge(self.histograms[n])
        return out

    def error_rate(self, tier: str) -> float | None:
        """Failed operations of ``tier`` per operation that reached it."""
        failures = self.count(f"failures.{tier}")
        if tier == "l1":
            reads = self.lookups
        else:
            reads = self.lookups - self.hits("l1", "exact")
            if tier == "l3":
                reads -= self.hits("l2", "exact")
            if not self.gauges.get(f"{tier}_enabled", 1.0):
                reads = 0
        ops = max(reads + self.count("stores"), failures)
        return _ratio(failures, ops)

    @property
    def tokens_saved(self) -> int:
        return int(self.count("saved.input_tokens") + self.count("saved.output_tokens"))

    @property
    def cost_saved(self) -> float:
        return self.count("saved.cost")

    @property
    def latency_saved(self) -> float:
        """Model time the priced hits did not spend: the producing calls' latency
        minus what the hits took (their mean, from the hit histograms)."""
        n = self.count("saved.hits")
        if not n:
            return 0.0
        mean = self.latency("l1", "l2", "l3", "semantic").mean() or 0.0
        return max(self.count("saved.model_latency") - n * mean, 0.0)

    @property
    def false_hit_reports(self) -> int:
        return int(sum(self.count(f"feedback.{k}.wrong") for k in KINDS))

    # -- derived metrics ------------------------------------------------------------

    def metrics(self) -> dict[str, float | None]:
        """Every derived number by name (see ``METRIC_NAMES``); None when undefined."""
        c, g = self.count, self.gauges
        lookups, stores = self.lookups, c("stores")
        m: dict[str, float | None] = {
            "lookups": lookups, "hits": self.hits(), "misses": int(c("misses")),
            "hit_rate": self.hit_rate(), "exact_hit_rate": self.hit_rate(kind="exact"),
            "semantic_hit_rate": self.hit_rate(kind="semantic"),
            "throughput": _ratio(lookups, self.interval), "stores": int(stores),
            "l1_bytes": g.get("l1_bytes"), "l1_entries": g.get("l1_entries"),
            "l1_memory_ratio": _ratio(g.get("l1_bytes", 0.0), g.get("l1_max_bytes", 0.0)),
            "l2_bytes": g.get("l2_bytes"), "l2_entries": g.get("l2_entries"),
            "evictions": sum(c(f"evictions.{t}") for t in TIERS),
            "expirations": sum(c(f"expirations.{t}") for t in TIERS),
            "l1_eviction_rate": _ratio(c("evictions.l1"), stores),
            "false_hit_reports": self.false_hit_reports,
            "tokens_saved": self.tokens_saved, "cost_saved": self.cost_saved,
            "latency_saved": self.latency_saved, "cost_spent": c("spent.cost"),
            "unpriced_hits": max(self.hits() - int(c("saved.hits")), 0),
        }
        entries = _ratio(g.get("l1_entries", 0.0), g.get("l1_max_entries", 0.0))
        ratios = [r for r in (m["l1_memory_ratio"], entries) if r is not None]
        m["l1_fill"] = max(ratios) if ratios else None
        semantic_hits = self.hits(kind="semantic")
        wrong = c("feedback.semantic.wrong")
        m["false_hit_rate"] = (_ratio(wrong, semantic_hits) if semantic_hits
                               else _ratio(self.false_hit_reports, self.hits()))
        model_calls = sum(c(f"calls.{op}") - c(f"cached.{op}") for op in ("llm", "chat"))
        m["model_calls"] = model_calls  # the ones that reached the model
        m["cached_calls"] = sum(c(f"cached.{op}") for op in OPS)
        m["model_error_rate"] = _ratio(c("call_errors.llm") + c("call_errors.chat"), model_calls)
        for t in TIERS:
            m[f"{t}_hit_rate"] = self.hit_rate(t)
            m[f"{t}_error_rate"] = self.error_rate(t) if g.get(f"{t}_enabled", 1.0) else None
            m[f"{t}_breaker_open"] = g.get(f"{t}_breaker_open")
            m[f"{t}_evictions"] = c(f"evictions.{t}")
            m[f"{t}_expirations"] = c(f"expirations.{t}")
        for h in LATENCIES:
            hist = self.histograms.get(h)
            for q in (50, 95, 99):
                m[f"{h}_p{q}"] = None if hist is None else hist.percentile(q)
        everything = self.latency()
        for q in (50, 95, 99):
            m[f"lookup_p{q}"] = everything.percentile(q)
        return m

    # -- merging and serialization ------------------------------------------------------

    @classmethod
    def merge(cls, snaps: Iterable[MetricSnapshot]) -> MetricSnapshot:
        """One snapshot covering all of ``snaps`` (other processes, other windows)."""
        items = list(snaps)
        if not items:
            return cls(ts=0.0, interval=0.0, proc="*", processes=0)
        start = min(s.ts - s.interval for s in items)
        end = max(s.ts for s in items)
        counters: dict[str, float] = defaultdict(float)
        hists: dict[str, LogHistogram] = {}
        missed: dict[str, int] = defaultdict(int)
        errors: dict[str, str] = {}
        for s in sorted(items, key=lambda s: s.ts):
            for k, v in s.counters.items():
                counters[k] += v
            for k, h in s.histograms.items():
                hists.setdefault(k, LogHistogram()).merge(h)
            for q, n in s.top_missed:
                missed[q] += n
            errors.update(s.last_errors)
        procs = {s.proc for s in items}
        one = items[0] if len(procs) == 1 else None
        return cls(ts=end, interval=max(end - start, 0.0),
                   proc=one.proc if one else "*", host=one.host if one else "",
                   pid=one.pid if one else 0, counters=dict(counters), histograms=hists,
                   gauges=_summed_gauges(items),
                   top_missed=sorted(missed.items(), key=lambda kv: (-kv[1], kv[0]))[:50],
                   last_errors=errors, processes=len(procs))

    def to_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "interval": self.interval, "proc": self.proc,
                "host": self.host, "pid": self.pid,
                "counters": {k: v for k, v in sorted(self.counters.items()) if v},
                "histograms": {k: h.to_dict() for k, h in sorted(self.histograms.items())},
                "gauges": dict(sorted(self.gauges.items())),
                "top_missed": [list(p) for p in self.top_missed],
                "last_errors": self.last_errors, "processes": self.processes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricSnapshot:
        return cls(ts=float(d["ts"]), interval=float(d["interval"]), proc=str(d.get("proc", "")),
                   host=str(d.get("host", "")), pid=int(d.get("pid", 0)),
                   counters={k: float(v) for k, v in d.get("counters", {}).items()},
                   histograms={k: LogHistogram.from_dict(h)
                               for k, h in d.get("histograms", {}).items()},
                   gauges={k: float(v) for k, v in d.get("gauges", {}).items()},
                   top_missed=[(str(q), int(n)) for q, n in d.get("top_missed", [])],
                   last_errors=dict(d.get("last_errors", {})),
                   processes=int(d.get("processes", 1)))

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers for people and the command line (NaN-free)."""
        out = {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
               for k, v in self.metrics().items()}
        return {"ts": self.ts, "interval": self.interval, "processes": self.processes,
                "metrics": out, "top_missed": self.top_missed, "last_errors": self.last_errors}
