"""Whether tuning is needed, and why: the rules that fire on a window's metrics
and the change each would make (or why it cannot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .knobs import Change, Knobs
from .rules import TuningRule
from .shadow import ShadowReport

__all__ = ["Finding", "TuningNeed", "find"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule that fired: its reading, and the change it asks for (None, with
    ``blocked`` saying why, when it cannot act)."""

    rule: TuningRule
    value: float | None
    change: Change | None
    blocked: str = ""

    @property
    def actionable(self) -> bool:
        return self.change is not None

    def describe(self) -> str:
        r = self.rule
        head = (f"{r.name}: {r.metric} = {_fmt(self.value)} {r.comparison} {r.threshold:g}")
        if self.change is not None:
            return f"{head} -> {r.action} {_fmt(self.change.old)} -> {_fmt(self.change.new)} " \
                   f"({self.change.reason})"
        return f"{head} -> {r.action} not possible: {self.blocked}"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.name, "action": self.rule.action, "metric": self.rule.metric,
                "value": self.value, "threshold": self.rule.threshold,
                "change": None if self.change is None else self.change.to_dict(),
                "blocked": self.blocked, "text": self.describe()}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "/".join(_fmt(x) for x in v.values())
    return str(v)


@dataclass(frozen=True, slots=True)
class TuningNeed:
    """``needed``: some rule fired and its change is possible.  ``evidence``: the
    window held enough lookups for the strategy to trust it."""

    needed: bool
    evidence: bool
    lookups: int
    findings: tuple[Finding, ...] = ()
    metrics: dict[str, float | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.needed

    @property
    def reasons(self) -> list[str]:
        """One line per fired rule, actionable ones first."""
        ordered = sorted(self.findings, key=lambda f: (not f.actionable, -f.rule.priority))
        out = [f.describe() for f in ordered]
        if not self.evidence:
            out.append(f"only {self.lookups} lookups in the window: not enough evidence")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"needed": self.needed, "evidence": self.evidence, "lookups": self.lookups,
                "reasons": self.reasons, "findings": [f.to_dict() for f in self.findings]}


def find(rules: Sequence[TuningRule], metrics: Mapping[str, float | None], knobs: Knobs, *,
         step: Any, shadow: ShadowReport | None, blocked: Mapping[str, str],
         min_lookups: int) -> TuningNeed:
    """Evaluate ``rules`` on ``metrics``.  ``step(rule)`` is the step a rule moves by;
    ``blocked``: action -> why it may not act now (rolled back recently)."""
    counted = metrics.get("lookups")
    lookups = int(counted or 0)
    findings: list[Finding] = []
    taken: set[str] = set()
    for rule in rules:
        if not rule.fires(metrics):
            continue
        why = blocked.get(rule.action, "")
        proposal: Change | str = why or knobs.propose(
            rule.action, step=step(rule), shadow=shadow, metrics=metrics)
        if isinstance(proposal, Change) and rule.action in taken:
            proposal = "a higher-priority rule asks for the same action"
        if isinstance(proposal, Change):
            taken.add(rule.action)
            findings.append(Finding(rule, metrics.get(rule.metric), proposal))
        else:
            findings.append(Finding(rule, metrics.get(rule.metric), None, proposal))
    # Metrics without a lookup count (a caller's own dict) are taken as evidence.
    evidence = counted is None or lookups >= min_lookups
    needed = evidence and any(f.actionable for f in findings)
    return TuningNeed(needed, evidence, lookups, tuple(findings), dict(metrics))
