"""Alert rules as data, evaluated once per snapshot, with hysteresis.

A rule fires after its condition holds for ``for_count`` evaluations in a row and
clears only after the value is back past ``clear_threshold`` (a band on the safe
side of ``threshold``) for ``clear_count`` evaluations: a value wobbling around the
threshold cannot make it flap.  Windows without data (or with fewer than
``min_lookups`` lookups) change nothing.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from .metrics import METRIC_NAMES

__all__ = ["DEFAULT_RULES", "AlertEvent", "AlertManager", "AlertRule", "Severity"]

_log = logging.getLogger("rag_cache_plugin.analytics")
Comparison = Literal[">", ">=", "<", "<="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def level(self) -> int:
        return {"critical": logging.CRITICAL, "warning": logging.WARNING}.get(self.value,
                                                                              logging.INFO)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """``metric op threshold`` (``metric`` is a name of ``METRIC_NAMES``); with
    ``change=True`` the value compared is the metric's change since the previous
    evaluation ("rising": ``change=True, op=">", threshold=0``)."""

    name: str
    metric: str
    op: Comparison
    threshold: float
    severity: Severity = Severity.WARNING
    clear_threshold: float | None = None
    """Where the value must return before the alert clears (default: ``threshold``)."""
    for_count: int = 1
    clear_count: int = 1
    change: bool = False
    min_lookups: int = 0
    message: str = ""

    def __post_init__(self) -> None:
        if self.metric not in METRIC_NAMES:
            raise ValueError(f"alert rule {self.name!r}: unknown metric {self.metric!r}")
        if self.op not in _OPS:
            raise ValueError(f"alert rule {self.name!r}: op must be one of {sorted(_OPS)}")
        object.__setattr__(self, "severity", Severity(self.severity))
        if self.for_count < 1 or self.clear_count < 1:
            raise ValueError(f"alert rule {self.name!r}: counts must be at least 1")
        c = self.clear_threshold
        if c is not None and (c > self.threshold if self.op in (">", ">=")
                              else c < self.threshold):
            raise ValueError(f"alert rule {self.name!r}: clear_threshold must lie on the "
                             "safe side of threshold")

    def breached(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def recovered(self, value: float) -> bool:
        """Back on the safe side: past ``clear_threshold`` (inclusive), or simply no
        longer breached when there is none."""
        c = self.clear_threshold
        if c is None:
            return not self.breached(value)
        return value <= c if self.op in (">", ">=") else value >= c

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = self.severity.value
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRule:
        return cls(**dict(data))


W, C, INFO = Severity.WARNING, Severity.CRITICAL, Severity.INFO
DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule("hit_rate_critical", "hit_rate", "<", 0.10, C, 0.15, 2, 2, min_lookups=20,
              message="hit rate below 10%"),
    AlertRule("model_latency_critical", "model_p95", ">", 10.0, C, 8.0, 2, 2,
              message="model call p95 latency above 10 s"),
    AlertRule("hit_rate_low", "hit_rate", "<", 0.30, W, 0.35, 2, 2, min_lookups=20,
              message="hit rate below 30%"),
    AlertRule("l1_memory_high", "l1_memory_ratio", ">", 0.80, W, 0.75, 1, 2,
              message="L1 memory above 80% of its bound"),
    AlertRule("l3_errors", "l3_error_rate", ">", 0.01, W, 0.005, 1, 2,
              message="L3 (Redis) error rate above 1%"),
    AlertRule("l3_unavailable", "l3_breaker_open", ">=", 1.0, W, None, 1, 1,
              message="L3 (Redis) circuit breaker open"),
    AlertRule("false_hits_rising", "false_hit_reports", ">", 0.0, W, 0.0, 2, 2, change=True,
              message="false-hit reports rising"),
    AlertRule("false_hit_rate_high", "false_hit_rate", ">", 0.05, W, 0.03, 1, 2,
              message="more than 5% of semantic hits reported wrong"),
    AlertRule("l1_churn", "l1_eviction_rate", ">", 0.5, INFO, 0.3, 2, 2,
              message="L1 evicts more than half as many entries as it stores"),
)
del W, C, INFO


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert fired or cleared."""

    rule: str
    severity: Severity
    state: Literal["fired", "cleared"]
    value: float
    threshold: float
    ts: float
    message: str


@dataclass(slots=True)
class _State:
    active: bool = False
    streak: int = 0
    previous: float | None = None
    since: float = 0.0
    value: float = 0.0


@dataclass
class AlertManager:
    rules: list[AlertRule] = field(default_factory=lambda: list(DEFAULT_RULES))
    hooks: list[Callable[[AlertEvent], None]] = field(default_factory=list)
    log: bool = True
    _states: dict[str, _State] = field(default_factory=dict)

    def add_hook(self, hook: Callable[[AlertEvent], None]) -> None:
        self.hooks.append(hook)

    def set_rules(self, rules: Iterable[AlertRule | Mapping[str, Any]]) -> None:
        """Replace the rules (dicts are read with ``AlertRule.from_dict``)."""
        self.rules = [r if isinstance(r, AlertRule) else AlertRule.from_dict(r) for r in rules]
        names = {r.name for r in self.rules}
        self._states = {k: v for k, v in self._states.items() if k in names}

    def active(self) -> list[AlertEvent]:
        """Alerts firing now (``ts`` is when each fired)."""
        out = []
        for rule in self.rules:
            st = self._states.get(rule.name)
            if st is not None and st.active:
                out.append(AlertEvent(rule.name, rule.severity, "fired", st.value,
                                      rule.threshold, st.since, rule.message or rule.name))
        return out

    def evaluate(self, metrics: Mapping[str, float | None],
                 ts: float | None = None) -> list[AlertEvent]:
        """Feed one window's metrics; returns the alerts that fired or cleared."""
        now = time.time() if ts is None else ts
        events: list[AlertEvent] = []
        lookups = metrics.get("lookups") or 0
        for rule in self.rules:
            st = self._states.setdefault(rule.name, _State())
            value = metrics.get(rule.metric)
            if rule.change:
                before, st.previous = st.previous, value
                if value is None or before is None:
                    continue
                value = value - before
            if value is None or lookups < rule.min_lookups:
                continue
            st.value = value
            if not st.active:
                st.streak = st.streak + 1 if rule.breached(value) else 0
                if st.streak >= rule.for_count:
                    st.active, st.streak, st.since = True, 0, now
                    events.append(self._event(rule, "fired", value, now))
            else:
                st.streak = st.streak + 1 if rule.recovered(value) else 0
                if st.streak >= rule.clear_count:
                    st.active, st.streak = False, 0
                    events.append(self._event(rule, "cleared", value, now))
        for ev in events:
            self._announce(ev)
        return events

    def _event(self, rule: AlertRule, state: Literal["fired", "cleared"], value: float,
               ts: float) -> AlertEvent:
        return AlertEvent(rule.name, rule.severity, state, value, rule.threshold, ts,
                          rule.message or f"{rule.metric} {rule.op} {rule.threshold}")

    def _announce(self, ev: AlertEvent) -> None:
        if self.log:
            level = ev.severity.level if ev.state == "fired" else logging.INFO
            _log.log(level, "rag-cache alert %s %s [%s]: %s (value %.4g, threshold %.4g)",
                     ev.rule, ev.state, ev.severity.value, ev.message, ev.value, ev.threshold)
        for hook in list(self.hooks):
            try:
                hook(ev)
            except Exception:  # a broken hook must not stop the others or the capture
                _log.exception("rag-cache alert hook failed")
