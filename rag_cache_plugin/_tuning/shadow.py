"""Shadow simulation: replay the recent sample of L1 lookups through miniature
caches, one per candidate policy and size, and read off what each would hit.

The sample is spatially sampled at ``rate`` (see ``Signals``), so a candidate of
``n`` entries is simulated with ``round(n * rate)``: the miniature caches of
Waldspurger et al. (SHARDS) and Caffeine's simulator.  Comparisons are between
candidates on the same keys, so cold misses at the start of the sample count
against every candidate alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .._policies import simulate

__all__ = ["ShadowReport", "run_shadow"]

_NEAR_BEST = 0.9  # growth stops at the smallest size that gets 90% of the best gain


@dataclass(frozen=True, slots=True)
class ShadowReport:
    """What the miniature caches hit on the sample (ratios in [0, 1])."""

    keys: int
    rate: float
    policy: str
    capacity: int
    """L1 capacity in entries now (the byte bound converted at the mean entry size)."""
    current: float
    policies: dict[str, float] = field(default_factory=dict)
    sizes: dict[float, float] = field(default_factory=dict)
    """Growth or shrink factor of the capacity -> ratio with the current policy."""
    best_policy: str = ""
    policy_gain: float = 0.0
    grow_factor: float | None = None
    grow_gain: float = 0.0
    shrink_factor: float | None = None
    shrink_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = {str(k): v for k, v in self.sizes.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShadowReport:
        data = dict(d)
        data["sizes"] = {float(k): float(v) for k, v in data.get("sizes", {}).items()}
        return cls(**data)


def _mini(capacity: float, rate: float) -> int:
    return max(1, round(capacity * rate))


def run_shadow(sample: Sequence[Hashable], *, rate: float, policy: str, capacity: int,
               policies: Sequence[str] = (), grow: Sequence[float] = (),
               shrink: float | None = None) -> ShadowReport:
    """Simulate ``policy`` at ``capacity`` (the baseline), every other of ``policies``
    at the same size, and ``policy`` at ``capacity * f`` for each growth factor and
    the shrink factor."""
    def ratio(name: str, factor: float = 1.0) -> float:
        return simulate(name, sample, _mini(capacity * factor, rate))

    current = ratio(policy)
    by_policy = {policy: current}
    for name in policies:
        if name not in by_policy:
            by_policy[name] = ratio(name)
    best = max(by_policy, key=lambda n: (by_policy[n], n == policy))
    sizes: dict[float, float] = {}
    seen = {_mini(capacity, rate)}
    for f in sorted(set(grow)):
        mini = _mini(capacity * f, rate)
        if f > 1.0 and mini not in seen:  # a factor the miniature cannot tell apart: skip
            seen.add(mini)
            sizes[f] = ratio(policy, f)
    grow_factor, grow_gain = None, 0.0
    gains = {f: r - current for f, r in sizes.items()}
    top = max(gains.values(), default=0.0)
    if top > 0:
        grow_factor = min(f for f, g in gains.items() if g >= _NEAR_BEST * top)
        grow_gain = gains[grow_factor]
    shrink_loss = None
    if shrink is not None and shrink < 1.0 and _mini(capacity * shrink, rate) not in seen:
        sizes[shrink] = ratio(policy, shrink)
        shrink_loss = current - sizes[shrink]
    return ShadowReport(
        keys=len(sample), rate=rate, policy=policy, capacity=capacity, current=current,
        policies=by_policy, sizes=sizes, best_policy=best,
        policy_gain=by_policy[best] - current, grow_factor=grow_factor, grow_gain=grow_gain,
        shrink_factor=shrink if shrink_loss is not None else None, shrink_loss=shrink_loss)
