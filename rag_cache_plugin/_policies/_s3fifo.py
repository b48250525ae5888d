"""S3-FIFO (Yang et al., SOSP 2023): three static FIFO queues."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import ClassVar

__all__ = ["S3FIFOPolicy"]

_MAX_FREQ = 3  # 2-bit counters: "read again" is all the queues need to know


class S3FIFOPolicy:
    """A small FIFO (10%) filters one-hit wonders, a main FIFO with CLOCK-style second
    chances keeps the rest, and a ghost FIFO of recently filtered keys (no values)
    sends a quick return straight to main.

    Most keys in real traces are read once; S3-FIFO evicts them after a short stay in
    the small queue instead of letting them age through an LRU list.  The paper
    evicts before it inserts; the tier inserts first, so the newest key is passed
    over while anything else can go.
    """

    name: ClassVar[str] = "s3fifo"
    __slots__ = (
        "_freq",
        "_ghost",
        "_ghost_max",
        "_main",
        "_newest",
        "_pending",
        "_small",
        "_small_max",
        "_threshold",
    )

    def __init__(self, capacity: int, *, small: float = 0.10, move_threshold: int = 1) -> None:
        capacity = max(capacity, 1)
        self._small_max = max(1, round(capacity * small))
        self._ghost_max = max(1, capacity - self._small_max)  # as many keys as main holds
        # A key leaving the small queue goes to main if read at least this often there.
        self._threshold = move_threshold
        # Queues: first key = oldest.  ``_freq`` holds the counter of every resident key.
        self._small: OrderedDict[Hashable, None] = OrderedDict()
        self._main: OrderedDict[Hashable, None] = OrderedDict()
        self._ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._freq: dict[Hashable, int] = {}
        self._newest: Hashable | None = None
        # The key ``victim`` last chose from the small queue: if it is removed next, it
        # is remembered in the ghost (an invalidated key is not, it was not filtered).
        self._pending: Hashable | None = None

    def __len__(self) -> int:
        return len(self._freq)

    def on_hit(self, key: Hashable) -> None:
        freq = self._freq[key]
        if freq < _MAX_FREQ:
            self._freq[key] = freq + 1

    def on_miss(self, key: Hashable) -> None:
        pass

    def on_insert(self, key: Hashable) -> None:
        self.on_remove(key)
        self._freq[key] = 0
        self._newest = key
        if self._ghost.pop(key, 0) is None:  # filtered not long ago: a quick return
            self._main[key] = None
        else:
            self._small[key] = None

    def on_remove(self, key: Hashable) -> None:
        if self._freq.pop(key, None) is None:
            return
        if key == self._newest:
            self._newest = None
        if self._small.pop(key, 0) is None:  # pop(key, 0) is None: it was there
            if key == self._pending:
                self._ghost[key] = None
                if len(self._ghost) > self._ghost_max:
                    self._ghost.popitem(last=False)
        else:
            del self._main[key]
        self._pending = None

    def victim(self) -> Hashable | None:
        small, main, freq, newest = self._small, self._main, self._freq, self._newest
        # ``>`` where the paper has ``>=``: the newcomer is already counted in.
        if len(small) > self._small_max or not main:
            while small:
                key = next(iter(small))
                if freq[key] < self._threshold:
                    if key == newest and main:
                        break  # only the newcomer left: take from main instead
                    self._pending = key
                    return key
                # Read while on probation: promote to main with a fresh counter.
                del small[key]
                main[key] = None
                freq[key] = 0
        # Main is a CLOCK: a key read since it last came round gets another lap.
        while main:
            key = next(iter(main))
            count = freq[key]
            if count == 0 and (key != newest or len(main) == 1):
                self._pending = None
                return key
            freq[key] = max(count - 1, 0)
            main.move_to_end(key)
        return next(iter(small), None)
