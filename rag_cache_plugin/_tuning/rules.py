"""Tuning rules as data: when ``metric op threshold`` holds (and every extra
condition), the rule asks for ``action``.  No code strings: a rule file is JSON."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["ACTIONS", "DEFAULT_RULES", "TARGETS", "Condition", "TuningRule", "load_rules"]

Comparison = Literal[">", ">=", "<", "<=", "=="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq}

ACTIONS = ("increase_ttl", "decrease_ttl", "increase_l1", "decrease_l1", "rebalance",
           "switch_policy", "tighten_semantic", "relax_semantic")
"""Every action a rule may ask for."""

TARGETS: dict[str, tuple[str, int]] = {
    "increase_ttl": ("hit_rate", 1),
    "decrease_ttl": ("hit_rate", 1),
    "increase_l1": ("l1_hit_rate", 1),
    "decrease_l1": ("l1_hit_rate", 1),
    "rebalance": ("l1_hit_rate", 1),
    "switch_policy": ("l1_hit_rate", 1),
    "tighten_semantic": ("false_hit_rate", -1),
    "relax_semantic": ("semantic_hit_rate", 1),
}
"""Action -> (the metric its change is judged by, +1 when higher is better)."""


@dataclass(frozen=True, slots=True)
class Condition:
    """``metric op threshold`` on one window's metrics (None: the metric is undefined
    in that window, and the condition does not hold)."""

    metric: str
    op: Comparison
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"comparison must be one of {sorted(_OPS)}, not {self.op!r}")

    def holds(self, metrics: Mapping[str, float | None]) -> bool:
        value = metrics.get(self.metric)
        return value is not None and _OPS[self.op](float(value), self.threshold)


@dataclass(frozen=True, slots=True)
class TuningRule:
    """``metric op threshold`` (plus ``conditions``) -> ``action``.

    ``step``: the multiplicative step of the action (None: the strategy's).
    ``priority``: the highest priority among rules ready to act goes first.
    ``cooldown``: windows after this rule acted before it may act again (None: the
    strategy's).  ``windows``: consecutive windows it must fire in before it acts
    (None: the strategy's evidence).  ``target``: the metric the change is judged by (None: the
    action's, see ``TARGETS``).
    """

    metric: str
    comparison: Comparison
    threshold: float
    action: str
    step: float | None = None
    priority: int = 0
    cooldown: int | None = None
    windows: int | None = None
    name: str = ""
    conditions: tuple[Condition, ...] = ()
    target: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.comparison not in _OPS:
            raise ValueError(f"comparison must be one of {sorted(_OPS)}")
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; known: {list(ACTIONS)}")
        if self.step is not None and not self.step > 1.0:
            raise ValueError("step must be greater than 1 (it multiplies or divides)")
        if self.cooldown is not None and self.cooldown < 0:
            raise ValueError("cooldown must be a number of windows >= 0")
        if self.windows is not None and self.windows < 1:
            raise ValueError("windows must be at least 1")
        if not self.name:
            object.__setattr__(self, "name", f"{self.action}:{self.metric}")
        object.__setattr__(self, "conditions", tuple(
            c if isinstance(c, Condition) else Condition(*c) if isinstance(c, list | tuple)
            else Condition(**c) for c in self.conditions))

    @property
    def judged_by(self) -> tuple[str, int]:
        """(metric, +1 or -1): what decides whether this rule's change helped."""
        metric, sign = TARGETS[self.action]
        return (self.target or metric), sign

    def fires(self, metrics: Mapping[str, float | None]) -> bool:
        head = Condition(self.metric, self.comparison, self.threshold)
        return head.holds(metrics) and all(c.holds(metrics) for c in self.conditions)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conditions"] = [asdict(c) for c in self.conditions]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TuningRule:
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown rule fields: {sorted(extra)}")
        data = dict(d)
        data["conditions"] = tuple(data.get("conditions", ()))
        return cls(**data)


def load_rules(rules: Iterable[TuningRule | Mapping[str, Any]]) -> tuple[TuningRule, ...]:
    """Rules from objects or dicts (e.g. parsed JSON), highest priority first."""
    out = [r if isinstance(r, TuningRule) else TuningRule.from_dict(r) for r in rules]
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ValueError("rule names must be unique")
    return tuple(sorted(out, key=lambda r: -r.priority))


_DEFAULTS: list[dict[str, Any]] = [
    dict(name="semantic-false-hits", metric="false_hit_excess", comparison=">",
         threshold=0.0, action="tighten_semantic", priority=90,
         conditions=[("false_hit_reports", ">=", 2)],
         description="reported false hits exceed the bound of the chosen setting: make "
                     "the semantic threshold stricter"),
    dict(name="ttl-expiry-misses", metric="expired_miss_rate", comparison=">", threshold=0.02,
         action="increase_ttl", priority=70,
         description="entries are asked for again after they expired"),
    dict(name="policy-shadow", metric="shadow_policy_gain", comparison=">=", threshold=0.03,
         action="switch_policy", priority=60,
         description="another eviction policy hits more on the recent sample"),
    dict(name="promote-into-l1", metric="lower_hit_rate", comparison=">=", threshold=0.2,
         action="rebalance", priority=50,
         description="many hits come from a lower tier that is not promoted upward"),
    dict(name="l1-shadow-growth", metric="shadow_l1_gain", comparison=">=", threshold=0.02,
         action="increase_l1", priority=40,
         description="a larger L1 hits more on the recent sample"),
    dict(name="l1-shadow-shrink", metric="shadow_l1_shrink_loss", comparison="<=",
         threshold=0.002, action="decrease_l1", priority=10,
         conditions=[("l1_fill", ">=", 0.9)],
         description="a smaller L1 would hit as often: give memory back (to the lower bound)"),
    dict(name="semantic-relax", metric="semantic_tightening", comparison=">",
         threshold=1e-9, action="relax_semantic", priority=1, windows=24,
         conditions=[("false_hit_reports", "<=", 0)],
         description="no false hits reported for a long while: try a step back toward "
                     "(never past) the calibrated threshold the user chose; kept only if "
                     "semantic hits rise and false hits stay within the bound"),
    dict(name="ttl-memory-pressure", metric="l2_fill", comparison=">=", threshold=0.95,
         action="decrease_ttl", priority=5, conditions=[("expired_miss_rate", "<=", 0.005)],
         description="L2 is culling and nothing is re-asked after expiry (needs "
                     "allow_ttl_decrease)"),
]

DEFAULT_RULES: tuple[TuningRule, ...] = load_rules(_DEFAULTS)
"""The rules a ``CacheTuner`` uses unless given others."""
