"""The limits the user sets on what the tuner may change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from .._policies import POLICIES

__all__ = ["TuningBounds"]

_GROWTH = 4.0  # default headroom above the configured TTL and L1 size


@dataclass(frozen=True, slots=True, kw_only=True)
class TuningBounds:
    """Inclusive limits.  ``None`` means "derive from the cache's configuration":
    maxima are 4x the configured TTL and L1 size, minima are the configured values
    (the tuner gives back memory it added, never more), so L1 shrinks below its
    configuration only when allowed here.  The TTL never goes below its current value
    unless ``allow_ttl_decrease`` (then down to ``min_ttl``, default a quarter).

    ``allow_ttl_decrease``: the TTL may go below its current value (staleness
    matters more than hits, or L2 is under memory pressure).  ``policies``: eviction
    policies the tuner may switch to.  ``rebalance``: it may change ``promote_to``.
    ``semantic``: it may tighten semantic thresholds (never looser than the
    calibrated setting the user chose).
    """

    min_ttl: float | None = None
    max_ttl: float | None = None
    allow_ttl_decrease: bool = False
    min_l1_entries: int | None = None
    max_l1_entries: int | None = None
    min_l1_bytes: int | None = None
    max_l1_bytes: int | None = None
    policies: tuple[str, ...] = tuple(POLICIES)
    rebalance: bool = True
    semantic: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.policies) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown eviction policies {sorted(unknown)}")
        for lo, hi in (("min_ttl", "max_ttl"), ("min_l1_entries", "max_l1_entries"),
                       ("min_l1_bytes", "max_l1_bytes")):
            a, b = getattr(self, lo), getattr(self, hi)
            if any(v is not None and v <= 0 for v in (a, b)):
                raise ValueError(f"{lo} and {hi} must be positive")
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} must not exceed {hi}")

    def resolved(self, *, ttl: float | None, l1_entries: int, l1_bytes: int) -> TuningBounds:
        """Fill the unset limits from the configured values.  A default minimum
        never exceeds an explicit maximum (the configuration may lie above it)."""
        def pair(lo: Any, hi: Any, base: Any, kind: type) -> tuple[Any, Any]:
            top = hi if hi is not None else None if base is None else kind(base * _GROWTH)
            low = lo if lo is not None else base
            if lo is None and low is not None and top is not None:
                low = min(low, top)
            return low, top

        ttl_floor = None if ttl is None else ttl / _GROWTH if self.allow_ttl_decrease else ttl
        min_ttl, max_ttl = pair(self.min_ttl, self.max_ttl, ttl, float)
        if self.min_ttl is None and ttl_floor is not None:
            min_ttl = ttl_floor if max_ttl is None else min(ttl_floor, max_ttl)
        min_e, max_e = pair(self.min_l1_entries, self.max_l1_entries, l1_entries, int)
        min_b, max_b = pair(self.min_l1_bytes, self.max_l1_bytes, l1_bytes, int)
        return replace(self, min_ttl=min_ttl, max_ttl=max_ttl, min_l1_entries=min_e,
                       max_l1_entries=max_e, min_l1_bytes=min_b, max_l1_bytes=max_b)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
