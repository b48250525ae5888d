"""The semantic-threshold knob (available once the cache has a semantic layer
that exposes calibrated thresholds)."""

from __future__ import annotations

from typing import Any

__all__ = ["semantic_knob"]


def semantic_knob(cache: Any) -> Any:
    """A knob over ``cache.semantic``'s thresholds, or None when there is none."""
    return None
