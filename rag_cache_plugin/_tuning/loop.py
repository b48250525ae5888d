"""The tuner's per-window reasoning: judge the change under evaluation, find what
the rules ask for, and make at most one new change (or recommendation)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._analytics.metrics import MetricSnapshot
from .._policies import POLICIES
from .history import Decision
from .knobs import Change
from .need import Finding, TuningNeed, find
from .rules import TuningRule
from .shadow import ShadowReport, run_shadow
from .signals import WindowSignals
from .strategies import Learner
from .window import tuner_metrics

if TYPE_CHECKING:
    from .engine import CacheTuner

__all__ = ["Brain", "TuningReport"]

Status = Literal["collecting", "evaluating", "changed", "recommended", "rolled_back", "kept",
                 "idle"]
# Changes that cost memory or freshness must pay for themselves; the rest only must
# not hurt.  Tightening the semantic threshold is a safety change: never undone.
_COSTLY = frozenset({"increase_l1", "increase_ttl", "relax_semantic"})
_SAFETY = frozenset({"tighten_semantic"})
# A change is also undone when its guard metric ends above the bound, whatever its
# target did: a relaxed threshold that lets false hits past the user's bound goes.
_GUARDS = {"relax_semantic": ("false_hit_excess", 0.0)}
_MIN_SAMPLE = 256


@dataclass(frozen=True, slots=True)
class TuningReport:
    """What one ``apply_tuning()`` did."""

    window: int
    status: Status
    decisions: tuple[Decision, ...] = ()
    need: TuningNeed | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    shadow: ShadowReport | None = None
    lookups: int = 0


@dataclass(slots=True)
class _Pending:
    change: Change
    rule: str
    target: str
    sign: int
    before: float | None
    window: int
    after: list[float] = field(default_factory=list)
    guard: list[float] = field(default_factory=list)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _mean(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


class Brain:
    """The state between windows: the change under evaluation, rule streaks and
    cooldowns, blocked actions, and the adaptive learner."""

    def __init__(self, tuner: CacheTuner, learner: Learner) -> None:
        self.t = tuner
        self.learner = learner
        self.window = 0
        self.decisions: deque[Decision] = deque(maxlen=10_000)
        self.pending: _Pending | None = None
        self.streak: dict[str, int] = {}
        self.acted: dict[str, int] = {}
        self.blocked: dict[str, tuple[int, str]] = {}  # action -> (until window, why)
        self.since_change: list[dict[str, float | None]] = []
        self.climb: str | None = None  # adaptive: the action that helped last

    # -- inputs -------------------------------------------------------------------------

    def step(self, rule: TuningRule) -> float:
        base = rule.step or self.t.strategy.step
        return base ** self.learner.scale(rule.action) if self.t.strategy.adaptive else base

    def _step_of(self, action: str) -> float:
        rule = next((r for r in self.t.rules if r.action == action), None)
        return self.t.strategy.step if rule is None else self.step(rule)

    def shadow(self, snap: MetricSnapshot) -> ShadowReport | None:
        """Shadow simulation when L1 evicted in this window (otherwise neither its
        policy nor its size mattered) and the sample is long enough."""
        if not snap.count("evictions.l1") or self.t.cache.l1.policy.name not in POLICIES:
            return None  # a custom policy object cannot be rebuilt in miniature
        knobs, sig = self.t.knobs, self.t.signals
        capacity = knobs.capacity()
        sample = sig.sample()
        if len(sample) < max(_MIN_SAMPLE, 2 * capacity * sig.rate) or capacity <= 0:
            return None
        step = self._step_of("increase_l1")
        # At the bound, one step beyond it is still simulated: the history then says
        # what the bound costs (the proposal itself stays inside it).
        grow = list(knobs.growth(step)) or [step]
        shrink = None
        if any(r.action == "decrease_l1" for r in self.t.rules):
            option = knobs.shrink(self._step_of("decrease_l1"))
            shrink = None if option is None else option[0]
        return run_shadow(sample, rate=sig.rate, policy=self.t.cache.l1.policy.name,
                          capacity=capacity, policies=self.t.bounds.policies, grow=grow,
                          shrink=shrink)

    def _blocked_now(self) -> dict[str, str]:
        return {a: why for a, (until, why) in self.blocked.items() if self.window < until}

    def need(self, metrics: dict[str, float | None], shadow: ShadowReport | None) -> TuningNeed:
        return find(self.t.rules, metrics, self.t.knobs, step=self.step, shadow=shadow,
                    blocked=self._blocked_now(), min_lookups=self.t.strategy.min_lookups)

    # -- one window ---------------------------------------------------------------------

    def close_window(self, snap: MetricSnapshot, sig: WindowSignals, now: float) -> TuningReport:
        t = self.t
        self.window += 1
        shadow = self.shadow(snap)
        metrics = tuner_metrics(snap, sig, l2_max_bytes=t.l2_max_bytes(), shadow=shadow,
                                shadow_idle=not snap.count("evictions.l1"))
        metrics.update(t.knobs.extra_metrics(metrics))
        made: list[Decision] = []
        status: Status = "idle"
        if self.pending is not None:
            verdict = self._judge(metrics, now)
            if verdict is None:
                status = "evaluating"
            else:
                made.append(verdict)
                status = "rolled_back" if verdict.kind == "rollback" else "kept"
        need = self.need(metrics, shadow)
        if status == "rolled_back":
            # This window ran the setting just undone: it is evidence for nothing now.
            self.streak.clear()
            self.since_change = []
        else:
            self.since_change.append(metrics)
            made.extend(self._consider(need, metrics, shadow, now))
            if made and made[-1].kind in ("change", "recommend"):
                status = "recommended" if t.dry_run else "changed"
        t.store.write_window(now, t.proc, self.window, snap.lookups, metrics, t.settings(),
                             None if shadow is None else shadow.to_dict())
        return TuningReport(self.window, status, tuple(made), need, metrics, shadow,
                            snap.lookups)

    def _consider(self, need: TuningNeed, metrics: dict[str, float | None],
                  shadow: ShadowReport | None, now: float) -> list[Decision]:
        t = self.t
        fired = {f.rule.name for f in need.findings if f.actionable}
        for rule in t.rules:
            self.streak[rule.name] = self.streak.get(rule.name, 0) + 1 if rule.name in fired \
                else 0
        if self.pending is None and need.evidence:
            choice = self._choose(need, metrics, shadow)
            if choice is not None:
                return [self._act(choice, now)]
        return []

    def _ready(self, f: Finding) -> bool:
        rule = f.rule
        cooldown = self.t.strategy.cooldown if rule.cooldown is None else rule.cooldown
        last = self.acted.get(rule.name)
        windows = self.t.strategy.windows if rule.windows is None else rule.windows
        return (self.streak.get(rule.name, 0) >= windows
                and (last is None or self.window - last > cooldown))

    def _choose(self, need: TuningNeed, metrics: dict[str, float | None],
                shadow: ShadowReport | None) -> Finding | None:
        ready = [f for f in need.findings if f.actionable and self._ready(f)]
        if not self.t.strategy.adaptive:
            return ready[0] if ready else None  # findings come highest priority first
        if not need.needed:
            return None  # adaptive explores only when something needs improving
        options = list(ready)
        blocked = self._blocked_now()
        # Hill climbing: the action whose last change helped may go on at once (its
        # evaluation window was the evidence), with a step grown by the learner.
        for rule in self.t.rules:
            if rule.action == self.climb and rule.action not in blocked and \
                    all(o.rule.action != rule.action for o in options):
                change = self.t.knobs.propose(rule.action, step=self.step(rule),
                                              shadow=shadow, metrics=metrics)
                if isinstance(change, Change):
                    options.append(Finding(rule, metrics.get(rule.metric), change))
        return self.learner.choose(options, lambda f: f.rule.action)

    def _act(self, f: Finding, now: float) -> Decision:
        t, change, rule = self.t, f.change, f.rule
        assert change is not None
        target, sign = rule.judged_by
        recent = self.since_change[-t.strategy.windows:]
        before = _mean([m.get(target) for m in recent])
        self.acted[rule.name] = self.window
        if not t.dry_run:
            t.knobs.apply(change)
            self.pending = _Pending(change, rule.name, target, sign, before, self.window)
            self.streak.clear()
            self.since_change = []
        d = Decision(now, self.window, "recommend" if t.dry_run else "change", rule.name,
                     change.action, change.knob, change.old, change.new, change.reason, target,
                     before, None, t.dry_run, t.proc)
        self._record(d)
        return d

    def _judge(self, metrics: dict[str, float | None], now: float) -> Decision | None:
        p = self.pending
        assert p is not None
        value = metrics.get(p.target)
        if value is not None:
            p.after.append(value)
        guard = _GUARDS.get(p.change.action)
        if guard is not None and metrics.get(guard[0]) is not None:
            p.guard.append(metrics[guard[0]])  # type: ignore[arg-type]
        if self.window - p.window < self.t.strategy.eval_windows:
            return None
        self.pending = None
        s, change = self.t.strategy, p.change
        after = _mean(list(p.after))
        gain = 0.0 if after is None or p.before is None else (after - p.before) * p.sign
        guard = _GUARDS.get(change.action)
        if change.action in _SAFETY:
            harm = ""
        elif guard is not None and p.guard and max(p.guard) > guard[1]:
            harm = f"{guard[0]} rose to {max(p.guard):+.4f}"
        elif gain < -s.tolerance:
            harm = f"{p.target} went from {_fmt(p.before)} to {_fmt(after)}"
        elif change.action in _COSTLY and gain < s.min_gain:
            harm = f"{p.target} gained {gain:+.4f} (< {s.min_gain}): not worth its cost"
        else:
            harm = ""
        kept = not harm
        if not kept:
            self.t.knobs.revert(change)
            until = self.window + s.block_windows
            self.blocked[change.action] = (until, f"rolled back in window {self.window} "
                                                  f"({harm}); not retried before window {until}")
            if self.climb == change.action:
                self.climb = None
        elif gain > s.min_gain:
            self.climb = change.action
        stats = self.learner.update(change.action, gain, kept=kept)
        self.t.store.save_stats(change.action, stats, now)
        d = Decision(now, self.window, "keep" if kept else "rollback", p.rule, change.action,
                     change.knob, change.old if kept else change.new,
                     change.new if kept else change.old,
                     (f"kept: {p.target} {_fmt(p.before)} -> {_fmt(after)}" if kept
                      else f"rolled back: {harm}"),
                     p.target, p.before, after, False, self.t.proc)
        self._record(d)
        return d

    def _record(self, d: Decision) -> None:
        self.decisions.append(d)
        self.t.store.write_decision(d)

    def pending_dict(self) -> dict[str, Any] | None:
        p = self.pending
        if p is None:
            return None
        return {"change": p.change.to_dict(), "rule": p.rule, "target": p.target,
                "before": p.before, "since_window": p.window}
