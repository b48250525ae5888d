"""One query-log row (a canonical question in one partition) and how rows merge.

A row's ``weight`` is the number of times its question was asked, decayed with a
half-life and valid at ``weight_at``.  Decayed counts add linearly once brought to
the same instant, so the observations a process gathered since its last flush (a
delta, itself a ``Row``) merge into the stored row, in SQLite or in Redis, in any
order and from any number of processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["MEAN_CAP", "Row", "decayed", "merge"]

MEAN_CAP = 20
"""Means over computations weigh at most this many old values, so recent ones count."""


def decayed(weight: float, at: float, now: float, half_life: float) -> float:
    """``weight`` (valid at ``at``) as of ``now``."""
    if weight == 0.0 or now <= at:  # a peer's clock slightly ahead must not inflate it
        return weight
    return float(weight * 0.5 ** ((now - at) / half_life))


def _mean(a: float | None, na: int, b: float | None, nb: int) -> float | None:
    """Mean of two means; the first is capped at ``MEAN_CAP`` values."""
    if a is None:
        return b
    if b is None or nb == 0:
        return a
    wa = min(na, MEAN_CAP)
    return (a * wa + b * nb) / (wa + nb)


@dataclass(slots=True)
class Row:
    """The log's knowledge of one question (``key`` is its cache entry key)."""

    key: str
    namespace: str
    partition: str
    canonical: str
    question: str
    """The question as last asked."""
    context: str | None = None
    llm_string: str | None = None
    """How it was asked (from ``QueryObserved``); None when never reported."""
    weight: float = 0.0
    weight_at: float = 0.0
    total: int = 0
    hits: int = 0
    misses: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    computed: int = 0
    latency: float | None = None
    """Mean seconds a miss took to compute."""
    input_tokens: float | None = None
    output_tokens: float | None = None
    cost: float | None = None
    """Mean US dollars of one computation (None: never priced)."""
    model: str = ""
    stores: int = 0
    changes: int = 0
    """Stores whose value differed from the previous one (answer instability)."""
    digest: str = ""
    first_digest: str = ""
    """In a delta only: the first digest it saw, compared with the stored row's last."""
    cached: bool | None = None
    expires: float | None = None
    stored_at: float | None = None
    served_by: str = ""
    """Key of the entry that last answered it semantically."""

    # -- observations (on deltas) ----------------------------------------------------

    def observe(self, t: float, half_life: float) -> None:
        """The question was asked at ``t``."""
        at = max(t, self.weight_at)
        self.weight = decayed(self.weight, self.weight_at, at, half_life) + \
            decayed(1.0, t, at, half_life)
        self.weight_at = at
        self.total += 1
        self.first_seen = t if self.first_seen is None else min(self.first_seen, t)
        self.last_seen = t if self.last_seen is None else max(self.last_seen, t)

    def computed_once(self, latency: float, input_tokens: int, output_tokens: int,
                      cost: float | None, model: str) -> None:
        n = self.computed
        self.latency = _mean(self.latency, n, latency, 1)
        self.input_tokens = _mean(self.input_tokens, n, float(input_tokens), 1)
        self.output_tokens = _mean(self.output_tokens, n, float(output_tokens), 1)
        if cost is not None:
            self.cost = _mean(self.cost, n, cost, 1)
        self.model = model or self.model
        self.computed = n + 1

    def stored(self, digest: str, expires: float | None, t: float) -> None:
        if digest:
            if self.digest and digest != self.digest:
                self.changes += 1
            self.first_digest = self.first_digest or digest
            self.digest = digest
        self.stores += 1
        self.cached = True
        self.expires = expires
        self.stored_at = t

    # -- (de)serialization ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def merge(row: Row | None, d: Row, half_life: float) -> Row:
    """``row`` (stored) updated with delta ``d`` (``row`` is modified and returned)."""
    if row is None:
        return dataclasses.replace(d, first_digest="")
    at = max(row.weight_at, d.weight_at)
    row.weight = decayed(row.weight, row.weight_at, at, half_life) + \
        decayed(d.weight, d.weight_at, at, half_life)
    row.weight_at = at
    row.total += d.total
    row.hits += d.hits
    row.misses += d.misses
    if d.first_seen is not None:
        row.first_seen = d.first_seen if row.first_seen is None else min(row.first_seen,
                                                                          d.first_seen)
    if d.last_seen is not None:
        row.last_seen = d.last_seen if row.last_seen is None else max(row.last_seen, d.last_seen)
        row.question = d.question or row.question
    if d.context is not None:
        row.context, row.llm_string = d.context, d.llm_string
    if d.computed:
        n = row.computed
        row.latency = _mean(row.latency, n, d.latency, d.computed)
        row.input_tokens = _mean(row.input_tokens, n, d.input_tokens, d.computed)
        row.output_tokens = _mean(row.output_tokens, n, d.output_tokens, d.computed)
        row.cost = _mean(row.cost, n, d.cost, d.computed)
        row.model = d.model or row.model
        row.computed = n + d.computed
    if d.stores:
        seam = bool(row.digest and d.first_digest and row.digest != d.first_digest)
        row.changes += d.changes + int(seam)
        row.stores += d.stores
        row.digest = d.digest or row.digest
    if d.cached is not None:
        row.cached = d.cached
    if d.stored_at is not None:
        row.expires, row.stored_at = d.expires, d.stored_at
    row.served_by = d.served_by or row.served_by
    return row
