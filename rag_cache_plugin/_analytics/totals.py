"""Reading the recorder: cumulative totals, gauges from the cache, window deltas."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .histogram import LogHistogram
from .recorder import SUM, Recorder

__all__ = ["Totals", "gauges_of", "read_totals"]


@dataclass(slots=True)
class Totals:
    """Everything counted since the engine started (one process)."""

    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, LogHistogram] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def minus(self, older: Totals, top: int = 20) -> Totals:
        counters = {k: v - older.counters.get(k, 0) for k, v in self.counters.items()}
        hists = {k: h.minus(older.histograms[k]) if k in older.histograms else h
                 for k, h in self.histograms.items()}
        missed = {q: n - older.missed.get(q, 0) for q, n in self.missed.items()}
        best = sorted(((q, n) for q, n in missed.items() if n > 0), key=lambda kv: (-kv[1], kv[0]))
        failed = {t for t, n in counters.items() if t.startswith("failures.") and n > 0}
        errors = {t: e for t, e in self.errors.items() if f"failures.{t}" in failed}
        return Totals({k: v for k, v in counters.items() if v},
                      {k: h for k, h in hists.items() if h.counts}, dict(best[:top]), errors)


def read_totals(rec: Recorder) -> Totals:
    """Sum every shard.  Copies are C-level (atomic under the GIL) while owners write."""
    counters: defaultdict[str, float] = defaultdict(float)
    lists: dict[str, list[float]] = {}
    missed: defaultdict[str, int] = defaultdict(int)
    errors: dict[str, str] = {}
    for s in rec.all_shards():
        for k, v in dict(s.c).items():
            counters[k] += v
        for name, values in s.h.items():
            values = list(values)
            acc = lists.get(name)
            if acc is None:
                lists[name] = values
            else:
                for i, x in enumerate(values):
                    if x:
                        acc[i] += x
        for q, n in dict(s.missed).items():
            missed[q] += n
        errors.update(dict(s.errors))
    hists: dict[str, LogHistogram] = {}
    semantic = LogHistogram()
    for name, values in lists.items():
        h = LogHistogram.from_list([int(n) for n in values[:SUM]], values[SUM])
        if name.startswith("semantic."):  # semantic hits: counted per tier, timed together
            counters[f"hits.{name[9:]}.semantic"] = h.count
            semantic.merge(h)
            continue
        if name in ("l1", "l2", "l3"):
            counters[f"hits.{name}.exact"] = h.count
        hists[name] = h
    hists["semantic"] = semantic
    return Totals({k: v for k, v in counters.items() if v},
                  {k: h for k, h in hists.items() if h.counts}, dict(missed), errors)


def gauges_of(cache: Any) -> dict[str, float]:
    """Readings from ``cache.info()`` (sizes, bounds, breaker states, settings)."""
    if cache is None:
        return {}
    try:
        info = cache.info()
    except Exception:  # a failing tier must not stop the snapshot
        return {}
    g: dict[str, float] = {}
    for name in ("l1_bytes", "l1_entries", "l1_max_bytes", "l1_max_entries",
                 "l2_bytes", "l2_entries"):
        if isinstance(info.get(name), int | float):
            g[name] = float(info[name])
    g["default_ttl"] = float(info.get("default_ttl") or 0.0)
    tiers = info.get("tiers", ["l1"])
    breakers = info.get("breakers", {})
    for t in ("l2", "l3"):
        g[f"{t}_enabled"] = 1.0 if t in tiers else 0.0
        if t in tiers:
            g[f"{t}_breaker_open"] = 0.0 if breakers.get(t, "closed") == "closed" else 1.0
    g["semantic_enabled"] = 1.0 if getattr(cache, "semantic", None) is not None else 0.0
    return g
