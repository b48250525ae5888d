"""The unit every tier stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry"]


@dataclass(slots=True)
class Entry:
    """A cached value with everything needed to find, expire and invalidate it.

    ``question`` is the canonical question; ``vector`` its embedding as raw
    little-endian float32 bytes (semantic matching only).  ``raw`` is the encoded
    payload, kept so promotion between tiers never re-encodes.
    """

    key: str
    namespace: str
    partition: str
    question: str
    value: Any
    created: float
    expires: float | None = None
    tags: tuple[str, ...] = ()
    vector: bytes | None = None
    raw: bytes = field(default=b"", repr=False)
    hit: Any = field(default=None, repr=False, compare=False)
    """The immutable L1 ``CacheHit`` of this entry, built on its first L1 hit and
    reused: an L1 hit then allocates nothing."""

    def remaining(self, now: float) -> float | None:
        """Seconds left to live, None for no expiry (<= 0 means expired)."""
        return None if self.expires is None else self.expires - now

    @property
    def size(self) -> int:
        return len(self.raw)
