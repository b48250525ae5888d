"""Reading a semantic candidate's entry through the tiers, like an exact lookup: L1,
then L2 and L3 behind their circuit breakers.  Only when every tier answered is an
absence certain (and the candidate dropped from the index)."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from ._entry import Entry
from ._events import TierName
from ._tiers import Ref

if TYPE_CHECKING:
    from ._core import RagCache

__all__ = ["Fetched", "afetch", "fetch"]

Fetched = tuple[Entry | None, TierName, bool]
"""(entry, tier it came from, whether "absent" is certain: every tier answered)"""


def fetch(cache: RagCache, ref: Ref, now: float) -> Fetched:
    """Read through L1, L2, L3 behind their breakers, like an exact lookup."""
    entry = cache.l1.get(ref, now)
    if entry is not None:
        return entry, "l1", True
    certain = True
    for tier in cache.lower:
        breaker = cache.breakers[tier.name]
        if not breaker.allow():
            certain = False
            continue
        started = perf_counter()
        try:
            entry = tier.get(ref, now)
        except Exception as exc:
            cache._failed(tier, "get", exc, ref.namespace, started)
            certain = False
            continue
        breaker.success()
        if entry is not None:
            return entry, tier.name, True
    return None, "l1", certain


async def afetch(cache: RagCache, ref: Ref, now: float) -> Fetched:
    """Async ``fetch``."""
    entry = cache.l1.get(ref, now)
    if entry is not None:
        return entry, "l1", True
    certain = True
    for tier in cache.lower:
        breaker = cache.breakers[tier.name]
        if not breaker.allow():
            certain = False
            continue
        started = perf_counter()
        try:
            entry = await tier.aget(ref, now)
        except Exception as exc:
            cache._failed(tier, "get", exc, ref.namespace, started)
            certain = False
            continue
        breaker.success()
        if entry is not None:
            return entry, tier.name, True
    return None, "l1", certain
