"""One evaluation window: the analytics counters since the previous window, plus
the tuner's own signals, as one flat dict of metrics the rules read."""

from __future__ import annotations

from typing import Any

from .._analytics.metrics import MetricSnapshot
from .shadow import ShadowReport
from .signals import WindowSignals

__all__ = ["SIGNAL_NAMES", "tuner_metrics", "window_delta"]

SIGNAL_NAMES = ("expired_misses", "expired_miss_rate", "lower_hit_rate", "near_hit_rate",
                "semantic_hits", "l2_fill", "sample_keys", "shadow_current",
                "shadow_policy_gain", "shadow_l1_gain", "shadow_l1_shrink_loss",
                "false_hit_target", "false_hit_excess", "semantic_threshold",
                "semantic_tightening")
"""Metrics the tuner adds to ``MetricSnapshot.metrics()`` (the last four with a
semantic layer)."""


def window_delta(current: MetricSnapshot, previous: MetricSnapshot | None, *, ts: float,
                 interval: float) -> MetricSnapshot:
    """What happened between two cumulative readings of ``CacheAnalytics.totals()``
    (counters and histograms are sums; gauges are the current readings).  The
    tuner keeps its own windows so the analytics engine's windows stay as they are."""
    if previous is None:
        counters, hists = dict(current.counters), dict(current.histograms)
    else:
        counters = {k: v - previous.counters.get(k, 0.0) for k, v in current.counters.items()}
        hists = {k: h.minus(previous.histograms[k]) if k in previous.histograms else h
                 for k, h in current.histograms.items()}
    return MetricSnapshot(ts=ts, interval=interval, proc=current.proc, host=current.host,
                          pid=current.pid, counters={k: v for k, v in counters.items() if v},
                          histograms={k: h for k, h in hists.items() if h.counts},
                          gauges=dict(current.gauges))


def _rate(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def tuner_metrics(snap: MetricSnapshot, signals: WindowSignals | None, *,
                  l2_max_bytes: int | None = None, shadow: ShadowReport | None = None,
                  shadow_idle: bool = False) -> dict[str, float | None]:
    """``snap.metrics()`` plus ``SIGNAL_NAMES``.  Without ``signals`` the misses after
    expiry are estimated from the expiration counts.  ``shadow_idle``: L1 did not evict in
    this window, so neither its policy nor its size mattered (gains are 0)."""
    m: dict[str, Any] = snap.metrics()
    lookups = snap.lookups
    if signals is not None:
        expired = float(signals.expired_misses)
    else:
        # No event stream (a stored snapshot): each tier counts an expiry when a lookup
        # finds an expired entry; the deepest count, capped by the misses, is the estimate.
        expired = min(max(snap.count(f"expirations.{t}") for t in ("l1", "l2", "l3")),
                      snap.count("misses"))
    m["expired_misses"] = expired
    m["expired_miss_rate"] = _rate(expired, lookups)
    lower = snap.hits("l2", "exact") + snap.hits("l3", "exact")
    m["lower_hit_rate"] = _rate(lower, lookups)
    m["near_hit_rate"] = _rate(snap.hits("l1") + snap.hits("l2"), lookups)
    m["semantic_hits"] = snap.hits(kind="semantic")
    l2_bytes = snap.gauges.get("l2_bytes")
    m["l2_fill"] = (l2_bytes / l2_max_bytes if l2_bytes is not None and l2_max_bytes
                    else None)
    if shadow is not None:
        m["sample_keys"] = shadow.keys
        m["shadow_current"] = shadow.current
        m["shadow_policy_gain"] = shadow.policy_gain
        m["shadow_l1_gain"] = shadow.grow_gain
        m["shadow_l1_shrink_loss"] = shadow.shrink_loss
    elif shadow_idle:
        m["shadow_policy_gain"] = 0.0
        m["shadow_l1_gain"] = 0.0
    return m
