"""Least recently used."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import ClassVar

__all__ = ["LRUPolicy"]


class LRUPolicy:
    """Least recently used."""

    name: ClassVar[str] = "lru"
    __slots__ = ("_order",)

    def __init__(self, capacity: int = 0) -> None:
        del capacity  # LRU needs no sizing; accepted for a uniform factory signature
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

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
