"""Storage tiers.  Every tier speaks ``Entry`` and the same ``Tier`` protocol, so one
contract suite covers L1, L2, L3-standalone and L3-cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from .._entry import Entry
from .._events import CacheEvent, TierName

__all__ = ["Emit", "Ref", "Tier"]

Emit = Callable[[CacheEvent], None]


class Ref(NamedTuple):
    """Where an entry lives: its key plus the namespace and partition it belongs to
    (L3 needs both to build the hash-tagged Redis key)."""

    key: str
    namespace: str
    partition: str


class Tier(Protocol):
    """The contract every tier meets.

    ``get`` returns None for absent, expired and undecodable entries; an undecodable
    one is deleted and reported as a ``Corrupt`` event.  I/O failures raise and are
    turned into misses by the core.
    """

    name: TierName

    def get(self, ref: Ref, now: float) -> Entry | None: ...
    def get_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]: ...
    def set(self, entry: Entry, now: float) -> None: ...
    def delete(self, refs: Iterable[Ref]) -> None: ...
    def invalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]: ...
    def clear(self, namespace: str | None = None) -> None: ...
    def close(self) -> None: ...

    async def aget(self, ref: Ref, now: float) -> Entry | None: ...
    async def aget_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]: ...
    async def aset(self, entry: Entry, now: float) -> None: ...
    async def adelete(self, refs: Iterable[Ref]) -> None: ...
    async def ainvalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]: ...
    async def aclear(self, namespace: str | None = None) -> None: ...
    async def aclose(self) -> None: ...
