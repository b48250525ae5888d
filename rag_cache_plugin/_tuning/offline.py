"""The rules evaluated on a recorded window, away from the process that recorded
it (``rag-cache tune``): a stand-in for the cache built from the recorded
settings, so proposals respect the recorded bounds exactly as the live tuner's do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from .bounds import TuningBounds
from .knobs import Knobs
from .need import TuningNeed, find
from .rules import TuningRule
from .shadow import ShadowReport
from .strategies import get_strategy

__all__ = ["recorded_need"]


class _RecordedL1:
    def __init__(self, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        self.max_entries = int(config.get("l1_max_entries") or 0)
        self.max_bytes = int(config.get("l1_max_bytes") or 0)
        self.policy = SimpleNamespace(name=str(config.get("l1_policy", "")))
        self.bytes_used = int(metrics.get("l1_bytes") or 0)
        self._entries = int(metrics.get("l1_entries") or 0)

    def __len__(self) -> int:
        return self._entries


def recorded_need(rules: Sequence[TuningRule], window: Mapping[str, Any]) -> TuningNeed:
    """What ``rules`` ask for on one row of ``TuningHistory.windows()``."""
    config, metrics = window.get("config") or {}, window.get("metrics") or {}
    bounds_data = dict(config.get("bounds") or {})
    bounds_data["policies"] = tuple(bounds_data.get("policies") or TuningBounds().policies)
    bounds = TuningBounds(**bounds_data)
    tiers = list(metrics.get("tiers") or [])
    cache = SimpleNamespace(
        default_ttl=config.get("default_ttl"), promote_to=tuple(config.get("promote_to") or ()),
        l1=_RecordedL1(config, metrics),
        l2=object() if metrics.get("l2_hit_rate") is not None or "l2" in tiers else None,
        l3=object() if metrics.get("l3_hit_rate") else None)
    strategy = get_strategy(str(config.get("strategy") or "balanced"))
    shadow = window.get("shadow")
    return find(rules, metrics, Knobs(cache, bounds), step=lambda r: r.step or strategy.step,
                shadow=None if shadow is None else ShadowReport.from_dict(shadow), blocked={},
                min_lookups=0)
