"""Query patterns: log rows grouped into families of paraphrases, and scored.

With semantic matching on, rows of one partition are grouped through the cache's
semantic layer (its memoised embeddings, a ``SemanticIndex`` of family leaders and
its ``MatchVerifier`` with the partition's threshold): a question joins the
heaviest earlier family the cache itself would answer it from.  A family is warmed
once, under its most asked question.  Without semantic matching each canonical
question is its own family.

Score = expected future hits x benefit per hit x confidence:

- expected hits: the rate the question is asked at, times the horizon a warmed
  answer serves (the cache's default TTL, else the half-life).  The rate is the
  decayed count over the decayed length of the time observed so far,
  tau * (1 - exp(-span / tau)) with tau = half-life / ln 2: a young log is not
  mistaken for a quiet one;
- benefit: what a miss costs, in dollars: its model cost plus its latency valued at
  ``latency_value`` dollars per second (``default_latency`` when never measured);
- confidence: answer stability (Beta(3, 1) prior over recomputations that kept the
  same answer) x freshness (halves per half-life since last asked: a burst long ago
  predicts less than a steady trickle of the same weight).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._entry import Entry
from .._tiers import Ref
from .probe import probe_many
from .rows import MEAN_CAP, Row, decayed

if TYPE_CHECKING:
    from .._core import RagCache

__all__ = ["QueryPattern", "Scoring", "analyze", "build_pattern", "group_rows",
           "observed_window"]

_STABLE_PRIOR = (3.0, 1.0)  # pseudo-counts: (kept the answer, changed it)


@dataclass(frozen=True, slots=True)
class Scoring:
    """How patterns are weighed (see the module docstring)."""

    half_life: float = 86_400.0
    horizon: float | None = None
    latency_value: float = 0.001
    default_latency: float = 1.0
    min_expected_hits: float = 1.0
    refresh_ahead: float = 0.2
    """Refresh a cached entry in the last this fraction of its lifetime."""

    def __post_init__(self) -> None:
        if self.half_life <= 0:
            raise ValueError("half_life must be positive")
        if not 0 < self.refresh_ahead < 1:
            raise ValueError("refresh_ahead must be a fraction between 0 and 1")


@dataclass(frozen=True, slots=True)
class QueryPattern:
    """A family of questions (one, or paraphrases of it) in one partition."""

    question: str
    key: str
    namespace: str
    partition: str
    members: tuple[str, ...]
    """Canonical questions of the family, most asked first."""
    member_keys: tuple[str, ...]
    count: float
    """Times asked, decayed with the half-life."""
    total: int
    hits: int
    misses: int
    first_seen: float | None
    last_seen: float | None
    latency: float | None
    input_tokens: float | None
    output_tokens: float | None
    cost: float | None
    model: str
    stability: float
    cached: bool
    expires: float | None
    lifetime: float | None
    """Seconds the cached entry lives in all (expires - created), when cached."""
    context: str | None
    llm_string: str | None
    expected_hits: float
    benefit: float
    confidence: float
    score: float
    tags: tuple[str, ...] = ()


def group_rows(cache: RagCache, rows: Sequence[Row], now: float,
               half_life: float) -> list[list[Row]]:
    """Families, each heaviest member first."""
    parts: dict[str, list[Row]] = {}
    for r in rows:
        parts.setdefault(r.partition, []).append(r)
    out: list[list[Row]] = []
    sem: Any = cache.semantic
    for part_rows in parts.values():
        part_rows.sort(key=lambda r: -decayed(r.weight, r.weight_at, now, half_life))
        if sem is None or not hasattr(sem, "embed_many") or len(part_rows) < 2:
            out.extend([r] for r in part_rows)
        else:
            out.extend(_semantic_families(sem, part_rows, now))
    return out


def _semantic_families(sem: Any, rows: list[Row], now: float) -> list[list[Row]]:
    from .._vector_index import SemanticIndex

    ns, partition = rows[0].namespace, rows[0].partition
    vectors = sem.embed_many([r.canonical for r in rows], ns)
    leaders = SemanticIndex(ann_threshold=None)
    families: dict[str, list[Row]] = {}
    threshold = sem.threshold(ns, partition)
    for row, vec in zip(rows, vectors, strict=True):
        home = None
        if vec is not None and len(leaders):
            for c in leaders.search(vec, sem.config.top_k, sem.verifier.candidate_floor, now):
                verdict = sem.verifier.verify(row.question, c.question, c.cosine)
                if verdict.match and verdict.score >= threshold:
                    home = families[c.key]
                    break
        if home is not None:
            home.append(row)
            continue
        families[row.key] = [row]
        if vec is not None:
            leaders.add(row.key, row.question, vec, None)
    return list(families.values())


def _weighted(rows: Sequence[Row], attr: str) -> float | None:
    num = den = 0.0
    for r in rows:
        v = getattr(r, attr)
        if v is not None and r.computed:
            w = min(r.computed, MEAN_CAP)
            num, den = num + v * w, den + w
    return num / den if den else None


def observed_window(rows: Sequence[Row], now: float, half_life: float) -> float:
    """Decayed seconds of observation: what a decayed count is a count over."""
    starts = [r.first_seen for r in rows if r.first_seen is not None]
    span = max(now - min(starts), 1.0) if starts else 1.0
    tau = half_life / math.log(2)
    return tau * -math.expm1(-span / tau)


def build_pattern(cache: RagCache, family: Sequence[Row], entries: dict[str, Entry],
                  now: float, s: Scoring, window: float) -> QueryPattern:
    """A scored pattern; ``entries``: the live entries found for the family's keys;
    ``window``: ``observed_window`` of the whole log."""
    lead = family[0]
    count = sum(decayed(r.weight, r.weight_at, now, s.half_life) for r in family)
    recomputed = sum(max(r.stores - 1, 0) for r in family)
    changed = min(sum(r.changes for r in family), recomputed)
    kept, flipped = _STABLE_PRIOR
    stability = (recomputed - changed + kept) / (recomputed + kept + flipped)
    keys = [r.key for r in family] + [r.served_by for r in family if r.served_by]
    entry = next((entries[k] for k in keys if k in entries), None)
    lifetime = None
    if entry is not None and entry.expires is not None:
        lifetime = max(entry.expires - entry.created, 0.0)
    seen = [r.last_seen for r in family if r.last_seen is not None]
    last = max(seen) if seen else None
    first_seen = [r.first_seen for r in family if r.first_seen is not None]
    latency, cost = _weighted(family, "latency"), _weighted(family, "cost")
    horizon = s.horizon or cache.default_ttl or s.half_life
    expected = count / window * horizon
    benefit = (cost or 0.0) + s.latency_value * (s.default_latency if latency is None
                                                 else latency)
    freshness = 1.0 if last is None else 0.5 ** (max(now - last, 0.0) / s.half_life)
    confidence = stability * freshness
    ctx = next((r for r in family if r.context is not None), None)
    return QueryPattern(
        question=lead.question, key=lead.key, namespace=lead.namespace,
        partition=lead.partition, members=tuple(r.canonical for r in family),
        member_keys=tuple(r.key for r in family), count=count,
        total=sum(r.total for r in family), hits=sum(r.hits for r in family),
        misses=sum(r.misses for r in family),
        first_seen=min(first_seen) if first_seen else None, last_seen=last,
        latency=latency, input_tokens=_weighted(family, "input_tokens"),
        output_tokens=_weighted(family, "output_tokens"), cost=cost,
        model=next((r.model for r in family if r.model), ""), stability=stability,
        cached=entry is not None, expires=None if entry is None else entry.expires,
        lifetime=lifetime, context=None if ctx is None else ctx.context,
        llm_string=None if ctx is None else ctx.llm_string, expected_hits=expected,
        benefit=benefit, confidence=confidence, score=expected * benefit * confidence,
        tags=() if entry is None else entry.tags)


def analyze(cache: RagCache, rows: Sequence[Row], now: float, s: Scoring,
            max_families: int) -> list[QueryPattern]:
    """Scored patterns of the heaviest ``max_families`` families, best first, with
    whether each is cached now (read from the tiers)."""
    hl = s.half_life
    window = observed_window(rows, now, hl)
    # Questions only stored (never asked) are no pattern.  Only the heaviest rows are
    # grouped: embedding a huge tail would cost more than warming it could ever save.
    asked = [r for r in rows if r.total > 0]
    heavy = sorted(asked, key=lambda r: -decayed(r.weight, r.weight_at, now, hl))
    families = group_rows(cache, heavy[: 2 * max_families], now, hl)
    families.sort(key=lambda f: -sum(decayed(r.weight, r.weight_at, now, hl) for r in f))
    families = families[:max_families]
    refs = [Ref(k, r.namespace, r.partition) for f in families for r in f
            for k in (r.key, r.served_by) if k]
    entries = probe_many(cache, refs, now)
    out = [build_pattern(cache, f, entries, now, s, window) for f in families]
    out.sort(key=lambda p: (-p.score, -p.count, p.question))
    return out
