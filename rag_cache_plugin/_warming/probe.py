"""Is an entry cached, and until when?  Read straight from the tiers: no ``Hit`` or
``Miss`` event (warming's checks are not traffic), no L1 policy update, no
promotion, and a tier behind an open circuit breaker is not asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._entry import Entry
from .._tiers import Ref

if TYPE_CHECKING:
    from .._core import RagCache

__all__ = ["aprobe", "probe_many"]


def _closed(cache: RagCache, tier: str) -> bool:
    # Only a closed breaker: ``allow()`` on a half-open one would take the single
    # trial call, which these reads never report back.
    breaker = cache.breakers.get(tier)
    return breaker is None or breaker.state == "closed"


def probe_many(cache: RagCache, refs: Sequence[Ref], now: float) -> dict[str, Entry]:
    """The live entries of ``refs`` (by key)."""
    out: dict[str, Entry] = {}
    todo: list[Ref] = []
    for ref in refs:
        entry = cache.l1.peek(ref.key, now)
        if entry is None:
            todo.append(ref)
        else:
            out[ref.key] = entry
    for tier in cache.lower:
        if not todo:
            break
        if not _closed(cache, tier.name):
            continue
        try:
            found = tier.get_many(todo, now)
        except Exception:  # unknown is "not cached": at worst warming computes it again
            continue
        out.update(found)
        todo = [r for r in todo if r.key not in found]
    return out


async def aprobe(cache: RagCache, ref: Ref, now: float) -> Entry | None:
    """The live entry of ``ref``, or None."""
    entry = cache.l1.peek(ref.key, now)
    if entry is not None:
        return entry
    for tier in cache.lower:
        if not _closed(cache, tier.name):
            continue
        try:
            entry = await tier.aget(ref, now)
        except Exception:
            continue
        if entry is not None:
            return entry
    return None
