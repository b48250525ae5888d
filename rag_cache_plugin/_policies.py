"""L1 eviction policies: pure bookkeeping over keys, O(1) per operation.

A policy never holds values.  The tier tells it what happened (hit, miss,
insert, removal) and asks it for the next victim while the tier is over its
bounds.  A policy may return the key just inserted, which is how admission
policies (TinyLFU) reject a newcomer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import ClassVar, Protocol

__all__ = ["POLICIES", "EvictionPolicy", "LRUPolicy", "make_policy"]


class EvictionPolicy(Protocol):
    """What the L1 tier (and the simulators) need from a policy."""

    name: ClassVar[str]

    def on_hit(self, key: Hashable) -> None:
        """A resident key was read."""

    def on_miss(self, key: Hashable) -> None:
        """A non-resident key was looked up (frequency sketches count it)."""

    def on_insert(self, key: Hashable) -> None:
        """A key became resident."""

    def on_remove(self, key: Hashable) -> None:
        """A resident key left: evicted, expired, deleted or invalidated."""

    def victim(self) -> Hashable | None:
        """The resident key to evict next (it stays resident until ``on_remove``)."""


class LRUPolicy:
    """Least recently used."""

    name: ClassVar[str] = "lru"
    __slots__ = ("_order",)

    def __init__(self, capacity: int = 0) -> None:
        del capacity  # LRU needs no sizing; accepted for a uniform factory signature
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def on_hit(self, key: Hashable) -> None:
        self._order.move_to_end(key)

    def on_miss(self, key: Hashable) -> None:
        pass

    def on_insert(self, key: Hashable) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def on_remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    def victim(self) -> Hashable | None:
        return next(iter(self._order), None)


PolicyFactory = Callable[[int], EvictionPolicy]

POLICIES: dict[str, PolicyFactory] = {"lru": LRUPolicy}
"""Policy name -> factory taking the capacity in entries."""


def make_policy(name: str, capacity: int) -> EvictionPolicy:
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; known: {sorted(POLICIES)}") from None
    return factory(capacity)
