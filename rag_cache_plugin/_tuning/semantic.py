"""The semantic-threshold knob: the verifier's base threshold, which every
partition's threshold starts from (``SemanticMatcher.threshold`` is the larger of
it and what that partition learned from ``feedback``).

``feedback()`` already tightens the one partition a wrong hit came from.  The tuner
acts on the aggregate: when reported false hits across the window exceed the
bound of the setting the user chose, the base tightens, so fresh partitions (a new
chat history is a new partition) start stricter too.  It relaxes only back toward,
never past, the calibrated threshold of that setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .knobs import Change

__all__ = ["SemanticKnob", "semantic_knob"]

# The verifier's documented calibration (Quora pairs): strict about 1% false hits,
# balanced about 5%.  A raw threshold gets the strict bound: the safe reading.
_SETTING_RATES = {"strict": 0.01, "balanced": 0.05}
_CEILING = 0.99  # stricter than this, semantic matching is as good as off


class SemanticKnob:
    """Reads and replaces ``matcher.verifier`` (``with_threshold`` gives a verifier with
    the same calibration and another threshold; no private state touched)."""

    def __init__(self, matcher: Any) -> None:
        from .._verifier import MatchVerifier

        self.matcher = matcher
        cfg = matcher.config
        self.floor = float(MatchVerifier.for_model(
            matcher.model_id, cfg.setting, target_false_hit_rate=cfg.target_false_hit_rate,
            threshold=cfg.threshold).threshold)
        self.target = float(cfg.target_false_hit_rate or (
            _SETTING_RATES.get(cfg.setting, 0.01) if cfg.threshold is None else 0.01))

    @property
    def threshold(self) -> float:
        return float(self.matcher.verifier.threshold)

    def get(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "floor": self.floor,
                "target_false_hit_rate": self.target,
                "setting": self.matcher.verifier.setting}

    def set(self, value: Mapping[str, Any]) -> None:
        t = min(max(round(float(value["threshold"]), 9), self.floor), 1.0)
        v = self.matcher.verifier
        if t != v.threshold:
            self.matcher.verifier = v.with_threshold(t)

    def metrics(self, m: Mapping[str, float | None]) -> dict[str, float | None]:
        """``false_hit_target``, ``false_hit_excess`` (observed minus target) and
        ``semantic_tightening`` (how far the base sits above the user's bound)."""
        rate = m.get("false_hit_rate")
        return {"false_hit_target": self.target,
                "false_hit_excess": None if rate is None else rate - self.target,
                "semantic_threshold": self.threshold,
                "semantic_tightening": self.threshold - self.floor}

    def propose_tighten(self, m: Mapping[str, float | None]) -> Change | str:
        t = self.threshold
        new = round(min(float(self.matcher.verifier.tighten(t)), _CEILING), 9)
        if new <= t:
            return f"the semantic threshold is at its ceiling ({_CEILING})"
        return Change("tighten_semantic", "semantic", {"threshold": t}, {"threshold": new},
                      f"{m.get('false_hit_reports') or 0:.0f} wrong semantic hits reported: "
                      f"{100 * (m.get('false_hit_rate') or 0):.1f}% of semantic hits, above "
                      f"the {100 * self.target:g}% bound")

    def propose_relax(self, m: Mapping[str, float | None]) -> Change | str:
        t = self.threshold
        # The inverse of tighten (the distance to 1 doubles), snapped to the bound.
        new = max(round(2.0 * t - 1.0, 9), self.floor)
        if new >= t or t - self.floor < 1e-9:
            return (f"the semantic threshold is at the calibrated bound of the chosen "
                    f"setting ({self.floor:g})")
        return Change("relax_semantic", "semantic", {"threshold": t}, {"threshold": new},
                      "no wrong semantic hits reported: back toward the calibrated bound")


def semantic_knob(cache: Any) -> SemanticKnob | None:
    """A knob over ``cache.semantic``'s base threshold, or None without one."""
    matcher = getattr(cache, "semantic", None)
    verifier = getattr(matcher, "verifier", None)
    if verifier is None or getattr(matcher, "config", None) is None:
        return None
    if not all(hasattr(verifier, a) for a in ("threshold", "model_id", "setting", "tighten")):
        return None
    return SemanticKnob(matcher)
