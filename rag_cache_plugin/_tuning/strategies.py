"""Strategies (how bold the tuner is) and the adaptive strategy's learner."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

__all__ = ["STRATEGIES", "ActionStats", "Learner", "Strategy", "get_strategy"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Strategy:
    """Step sizes, cooldowns and the evidence a change needs.

    ``step``: multiplicative step of TTL and L1 moves (L1 growth may jump up to
    ``step**3`` when the shadow simulation says so).  ``min_lookups``: lookups a
    window needs to count as evidence.  ``windows``: consecutive windows a rule must
    fire in before it acts.  ``eval_windows``: windows a change is judged over.
    ``tolerance``: a target metric worse than before by more than this is rolled back.
    ``min_gain``: a change that costs memory or freshness must gain at least this.
    ``block_windows``: how long a rolled-back action is not tried again.
    """

    name: str
    step: float
    cooldown: int
    min_lookups: int
    windows: int
    eval_windows: int
    tolerance: float
    min_gain: float
    block_windows: int
    adaptive: bool = False
    explore: float = 0.0
    """Adaptive only: the chance of trying a candidate other than the best-rated one."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STRATEGIES: dict[str, Strategy] = {
    "conservative": Strategy("conservative", step=1.5, cooldown=4, min_lookups=2000, windows=3,
                             eval_windows=2, tolerance=0.01, min_gain=0.005, block_windows=24),
    "balanced": Strategy("balanced", step=2.0, cooldown=1, min_lookups=1000, windows=2,
                         eval_windows=1, tolerance=0.02, min_gain=0.005, block_windows=12),
    "aggressive": Strategy("aggressive", step=3.0, cooldown=1, min_lookups=300, windows=1,
                           eval_windows=1, tolerance=0.03, min_gain=0.002, block_windows=6),
    "adaptive": Strategy("adaptive", step=2.0, cooldown=1, min_lookups=1000, windows=1,
                         eval_windows=1, tolerance=0.02, min_gain=0.005, block_windows=12,
                         adaptive=True, explore=0.1),
}


def get_strategy(strategy: str | Strategy) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}; known: {sorted(STRATEGIES)}") from None


@dataclass(slots=True)
class ActionStats:
    """What the changes of one action did to their targets so far."""

    n: int = 0
    gain: float = 0.0
    """Running mean of (after - before) of the target, signed so that more is better."""
    scale: float = 1.0
    """Hill-climbing step exponent: the action moves by ``step ** scale``."""


class Learner:
    """Epsilon-greedy over actions, rated by the gains their past changes measured.

    Untried actions are rated ``prior`` (a little optimism, so each gets tried once
    when it is a candidate).  Hill climbing: an action that helped takes bigger steps
    next time, one that was rolled back smaller ones.
    """

    def __init__(self, *, explore: float, seed: int | None = 0, prior: float = 0.01,
                 alpha: float = 0.3, stats: Mapping[str, ActionStats] | None = None) -> None:
        self.explore = explore
        self.prior = prior
        self.alpha = alpha
        self.stats: dict[str, ActionStats] = dict(stats or {})
        self._rng = random.Random(seed)

    def estimate(self, action: str) -> float:
        s = self.stats.get(action)
        return self.prior if s is None or s.n == 0 else s.gain

    def scale(self, action: str) -> float:
        s = self.stats.get(action)
        return 1.0 if s is None else s.scale

    def update(self, action: str, gain: float, *, kept: bool) -> ActionStats:
        s = self.stats.setdefault(action, ActionStats())
        s.n += 1
        # A running mean for the first few, then exponential: workloads drift.
        weight = max(1.0 / s.n, self.alpha)
        s.gain += weight * (gain - s.gain)
        s.scale = min(s.scale * 1.5, 3.0) if kept and gain > 0 else max(s.scale * 0.5, 0.25)
        return s

    def choose(self, options: Sequence[T], action_of: Any) -> T | None:
        """The best-rated option (ties: the first), or now and then a random one.
        Options rated below zero are only ever explored."""
        if not options:
            return None
        if self._rng.random() < self.explore:
            return self._rng.choice(list(options))
        best = max(options, key=lambda o: self.estimate(action_of(o)))
        return best if self.estimate(action_of(best)) >= 0 else None
