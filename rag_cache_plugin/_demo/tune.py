"""Tuning in the demo: a ``CacheTuner`` that acts when a chain ends (the LangChain
tuning handler and the LlamaIndex event handler emit ``ChainBoundary``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..analytics import CacheAnalytics
from ..tuning import STRATEGIES, CacheTuner

__all__ = ["make_tuner", "tuner_state"]


def make_tuner(app: Any, analytics: CacheAnalytics, window: int) -> CacheTuner:
    """A tuner that acts at chain boundaries (the callback handlers emit them)."""
    # The aggressive strategy, with windows as short as the demo is: the stock
    # ones want 300 to 2,000 lookups of evidence per window.
    strategy = replace(STRATEGIES["aggressive"], name="aggressive (demo windows)",
                       min_lookups=window)
    # interval ~0: every boundary may close a window once it holds enough lookups.
    return CacheTuner(app.cache, analytics, strategy=strategy, interval=1e-3,
                      history_path=None)


def tuner_state(tuner: CacheTuner) -> dict[str, Any]:
    """The strategy, the windows judged and the tunable settings now."""
    config = tuner.get_current_config()
    return {"strategy": tuner.strategy.name, "windows": tuner.brain.window,
            "settings": {k: config[k] for k in ("l1_max_entries", "l1_policy", "default_ttl",
                                                 "promote_to") if k in config}}
