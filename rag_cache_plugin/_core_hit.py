"""``CacheHit``, what a lookup returns, and the fast way the core builds one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._events import MatchKind, TierName

__all__ = ["CacheHit"]


@dataclass(frozen=True, slots=True)
class CacheHit:
    """What a lookup found.  ``value`` is what was stored (JSON data; treat it as
    read-only: L1 hands out the same object to every caller)."""

    value: Any
    tier: TierName
    kind: MatchKind
    score: float
    key: str
    namespace: str
    partition: str
    question: str
    """The cached question (for a semantic hit, the one that matched)."""
    expires: float | None = None
    evidence: Mapping[str, Any] | None = None


# A frozen dataclass's __init__ pays object.__setattr__ per field, which was most of
# an L1 hit's cost; hits built by the core fill the slots directly (same class, same API).
(_s_value, _s_tier, _s_kind, _s_score, _s_key, _s_ns, _s_part, _s_question, _s_expires,
 _s_evidence) = (getattr(CacheHit, f).__set__ for f in CacheHit.__dataclass_fields__)


def _new_hit(value: Any, tier: TierName, kind: MatchKind, score: float, key: str, ns: str,
             partition: str, question: str, expires: float | None,
             evidence: Mapping[str, Any] | None) -> CacheHit:
    hit = object.__new__(CacheHit)
    _s_value(hit, value)
    _s_tier(hit, tier)
    _s_kind(hit, kind)
    _s_score(hit, score)
    _s_key(hit, key)
    _s_ns(hit, ns)
    _s_part(hit, partition)
    _s_question(hit, question)
    _s_expires(hit, expires)
    _s_evidence(hit, evidence)
    return hit
