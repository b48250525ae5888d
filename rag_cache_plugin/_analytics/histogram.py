"""A fixed-bucket logarithmic latency histogram.

Every process uses the same bucket edges, so histograms merge by adding counts
(across threads, processes, hosts and time windows).  Twenty buckets a decade
from 1 microsecond to 10,000 seconds: a percentile read from the geometric middle
of its bucket is within ``PRECISION`` (about 6%) of the true value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["BUCKETS", "PRECISION", "LogHistogram", "bucket_of", "upper_edge"]

PER_DECADE = 20
MIN_VALUE = 1e-6
DECADES = 10
BUCKETS = PER_DECADE * DECADES + 2
"""Bucket 0 holds values below ``MIN_VALUE``; the last holds values of 10^4 s and more."""
PRECISION = 10 ** (0.5 / PER_DECADE) - 1
"""Largest relative error of a percentile inside the covered range."""

# bucket_of(v) = floor(log10(v / MIN_VALUE) * PER_DECADE) + 1, written so the hot
# path does one log, one multiply-add and one int().
_SCALE = PER_DECADE / math.log(10)
_OFFSET = -math.log(MIN_VALUE) * _SCALE + 1
_LAST = BUCKETS - 1
_log = math.log


def bucket_of(value: float) -> int:
    """Index of the bucket holding ``value`` (seconds): [lower edge, upper edge)."""
    if value < MIN_VALUE:
        return 0
    b = int(_log(value) * _SCALE + _OFFSET)
    return b if b < _LAST else _LAST


def upper_edge(b: int) -> float:
    """Exclusive upper edge of bucket ``b`` (inf for the overflow bucket)."""
    if b >= _LAST:
        return math.inf
    return float(MIN_VALUE * 10 ** (b / PER_DECADE))


def _middle(b: int) -> float:
    if b <= 0:
        return MIN_VALUE
    if b >= _LAST:
        return MIN_VALUE * 10 ** ((_LAST - 1) / PER_DECADE)
    return float(MIN_VALUE * 10 ** ((b - 0.5) / PER_DECADE))


@dataclass(slots=True)
class LogHistogram:
    """Sparse counts per bucket plus the exact sum of the recorded values."""

    counts: dict[int, int] = field(default_factory=dict)
    sum: float = 0.0

    @classmethod
    def from_list(cls, counts: Iterable[int], total: float) -> LogHistogram:
        return cls({b: n for b, n in enumerate(counts) if n}, total)

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def record(self, value: float, n: int = 1) -> None:
        b = bucket_of(value)
        self.counts[b] = self.counts.get(b, 0) + n
        self.sum += value * n

    def merge(self, other: LogHistogram) -> None:
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.sum += other.sum

    def minus(self, older: LogHistogram) -> LogHistogram:
        """Counts recorded since ``older`` (an earlier reading of the same histogram)."""
        out = {b: n - older.counts.get(b, 0) for b, n in self.counts.items()}
        return LogHistogram({b: n for b, n in out.items() if n > 0}, self.sum - older.sum)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (``q`` in 0..100); None when empty."""
        total = self.count
        if total == 0:
            return None
        rank = max(1, math.ceil(q / 100 * total))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return _middle(b)
        return _middle(max(self.counts))  # pragma: no cover - rank <= total

    def mean(self) -> float | None:
        total = self.count
        return self.sum / total if total else None

    def cumulative(self, edges: Iterable[int]) -> list[tuple[float, int]]:
        """(upper edge, count of values below it) at the given bucket indexes,
        the shape of a Prometheus histogram's ``le`` buckets."""
        out: list[tuple[float, int]] = []
        ordered = sorted(self.counts.items())
        for e in edges:
            out.append((upper_edge(e), sum(n for b, n in ordered if b <= e)))
        return out

    def to_dict(self) -> dict[str, object]:
        return {"c": {str(b): n for b, n in sorted(self.counts.items())}, "s": self.sum}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LogHistogram:
        raw = data.get("c") or {}
        counts = {int(b): int(n) for b, n in raw.items()}  # type: ignore[attr-defined]
        return cls(counts, float(data.get("s", 0.0)))  # type: ignore[arg-type]
