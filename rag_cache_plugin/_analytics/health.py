"""Health score (0-100, with what cost the points) and recommendations that say
what to change and why.  Both are pure functions of a ``MetricSnapshot``, so the
command line computes them from stored history exactly as a live process does."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .metrics import MetricSnapshot

__all__ = ["HealthFactor", "HealthScore", "Recommendation", "health_score", "recommend"]

MIN_LOOKUPS = 20
"""Fewer lookups than this say nothing about the hit rate."""


@dataclass(frozen=True, slots=True)
class HealthFactor:
    name: str
    lost: float
    weight: float
    detail: str


@dataclass(frozen=True, slots=True)
class HealthScore:
    score: float
    status: Literal["healthy", "degraded", "critical"]
    breakdown: tuple[HealthFactor, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "status": self.status,
                "breakdown": [{"name": f.name, "lost": f.lost, "weight": f.weight,
                               "detail": f.detail} for f in self.breakdown]}


@dataclass(frozen=True, slots=True)
class Recommendation:
    action: str
    reason: str
    priority: Literal["high", "medium", "low"] = "medium"
    setting: str | None = None
    current: Any = None
    suggested: Any = None
    questions: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "priority": self.priority,
                "setting": self.setting, "current": self.current, "suggested": self.suggested,
                "questions": list(self.questions)}


def _clamp(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def health_score(s: MetricSnapshot) -> HealthScore:
    """100 minus the points each problem costs (weights sum to 100)."""
    m = s.metrics()
    factors: list[HealthFactor] = []
    hr = m["hit_rate"]
    if s.lookups < MIN_LOOKUPS or hr is None:
        factors.append(HealthFactor("hit_rate", 0.0, 30, f"only {s.lookups} lookups"))
    else:
        factors.append(HealthFactor("hit_rate", 30 * _clamp((0.5 - hr) / 0.5), 30,
                                    f"hit rate {_pct(hr)} (full marks from 50%)"))
    open_tiers = [t for t in ("l2", "l3") if (m[f"{t}_breaker_open"] or 0) >= 1]
    rates: dict[str, float] = {t: r for t in ("l2", "l3")
                               if (r := m[f"{t}_error_rate"]) is not None}
    worst = max(rates.values(), default=0.0)
    if open_tiers:
        factors.append(HealthFactor("availability", 25.0, 25,
                                    f"circuit open on {', '.join(open_tiers)}"))
    else:
        detail = ", ".join(f"{t} errors {_pct(r)}" for t, r in rates.items()) or "no lower tiers"
        factors.append(HealthFactor("availability", 25 * _clamp(worst / 0.05), 25, detail))
    churn = m["l1_eviction_rate"]
    if churn is None or s.count("stores") < 10:
        factors.append(HealthFactor("l1_pressure", 0.0, 15, "few stores"))
    else:
        factors.append(HealthFactor("l1_pressure", 15 * _clamp((churn - 0.05) / 0.45), 15,
                                    f"{s.count('evictions.l1'):.0f} L1 evictions for "
                                    f"{s.count('stores'):.0f} stores"))
    fhr = m["false_hit_rate"]
    factors.append(HealthFactor("false_hits", 15 * _clamp((fhr or 0.0) / 0.05), 15,
                                f"{s.false_hit_reports} false-hit reports ({_pct(fhr)} of hits)"))
    p95 = s.latency("l1", "l2", "l3", "semantic").percentile(95)
    if p95 is None:
        factors.append(HealthFactor("latency", 0.0, 15, "no hits"))
    else:
        lost = 15 * _clamp(math.log10(max(p95, 1e-9) / 0.01) / math.log10(25))
        factors.append(HealthFactor("latency", lost, 15,
                                    f"hit p95 {p95 * 1000:.2f} ms (full marks up to 10 ms)"))
    factors = [HealthFactor(f.name, round(f.lost, 2), f.weight, f.detail) for f in factors]
    score = round(max(0.0, 100 - sum(f.lost for f in factors)), 1)
    status: Literal["healthy", "degraded", "critical"] = (
        "healthy" if score >= 80 else "degraded" if score >= 50 else "critical")
    return HealthScore(score, status, tuple(factors))


def recommend(s: MetricSnapshot, *, top: int = 10) -> list[Recommendation]:
    """What to change, most urgent first."""
    m, g = s.metrics(), s.gauges
    out: list[Recommendation] = []
    for tier, what in (("l3", "Redis"), ("l2", "the SQLite file")):
        failures = s.count(f"failures.{tier}")
        if failures or (m[f"{tier}_breaker_open"] or 0) >= 1:
            opened = " and its circuit breaker is open (lookups skip it)" if (
                m[f"{tier}_breaker_open"] or 0) >= 1 else ""
            last = s.last_errors.get(tier, "")
            out.append(Recommendation(
                f"Fix {what} errors ({tier.upper()})",
                f"{failures:.0f} failed {tier.upper()} operations (error rate "
                f"{_pct(m[f'{tier}_error_rate'])}){opened}; every failure is a miss and the "
                f"shared tier stops sharing.{' Last error: ' + last if last else ''}",
                "high", "redis" if tier == "l3" else "sqlite_path"))
    stores, churn = s.count("stores"), m["l1_eviction_rate"] or 0.0
    lower_hits = s.hits("l2", "exact") + s.hits("l3", "exact")
    if stores >= 10 and (churn > 0.2 or ((m["l1_fill"] or 0) > 0.95 and lower_hits > 0)):
        by_bytes = (m["l1_memory_ratio"] or 0) > 0.95
        setting = "l1_max_bytes" if by_bytes else "l1_max_entries"
        current = int(g.get(setting, 0))
        out.append(Recommendation(
            "Raise the L1 size",
            f"L1 evicted {s.count('evictions.l1'):.0f} entries for {stores:.0f} stores and "
            f"{lower_hits} hits had to come from L2/L3; a larger L1 answers those in "
            "microseconds.", "high" if churn > 0.5 else "medium", setting, current,
            current * (4 if churn > 0.5 else 2) if current else None))
    ttl = g.get("default_ttl", 0.0)
    expired = m["expirations"] or 0
    if ttl > 0 and expired and s.count("misses") >= 10 and expired >= 0.1 * s.count("misses"):
        out.append(Recommendation(
            "Lengthen the TTL",
            f"{expired:.0f} entries expired against {s.count('misses'):.0f} misses: answers "
            f"are dropped while still asked for.", "medium", "ttl", ttl, ttl * 2))
    if not g.get("semantic_enabled") and s.lookups >= MIN_LOOKUPS and (m["hit_rate"] or 0) < 0.5:
        out.append(Recommendation(
            "Enable semantic matching",
            f"{_pct(1 - (m['hit_rate'] or 0))} of lookups miss and only exact repeats can hit; "
            "paraphrased questions would hit with CacheConfig(semantic=SemanticConfig("
            "embedder=...)).", "medium", "semantic", None, "SemanticConfig(embedder=...)"))
    fhr = m["false_hit_rate"] or 0.0
    if s.false_hit_reports and fhr > 0.02:
        out.append(Recommendation(
            "Tighten semantic matching",
            f"{s.false_hit_reports} hits were reported wrong ({_pct(fhr)}); use "
            "SemanticConfig(setting='strict') or a lower target_false_hit_rate.", "high",
            "semantic.target_false_hit_rate"))
    repeated = [(q, n) for q, n in s.top_missed if n >= 2][:top]
    if repeated:
        out.append(Recommendation(
            "Warm these questions",
            f"{len(repeated)} questions missed repeatedly (top: {repeated[0][0]!r}, "
            f"{repeated[0][1]} misses); pre-compute their answers.", "low", None, None, None,
            tuple(q for q, _ in repeated)))
    order = {"high": 0, "medium": 1, "low": 2}
    return sorted(out, key=lambda r: order[r.priority])
