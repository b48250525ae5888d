"""The policy protocol every L1 eviction policy meets."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import ClassVar, Protocol

__all__ = ["EvictionPolicy", "PolicyFactory"]


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


PolicyFactory = Callable[[int], EvictionPolicy]
"""Builds a policy from the capacity in entries."""
