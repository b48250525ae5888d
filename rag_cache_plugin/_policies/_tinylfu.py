"""W-TinyLFU (Einziger, Friedman & Manes, 2017), shaped after Caffeine."""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable
from typing import ClassVar

from ._sketch import FrequencySketch

__all__ = ["TinyLFUPolicy"]

# A candidate this popular that still loses the admission contest is let in at random
# 1 time in 128 (as in Caffeine), so crafted hash collisions cannot pin a victim.
_HASHDOS_THRESHOLD = 6
# Hits are recorded in a small lossy buffer and applied on the next miss, insert or
# eviction (Caffeine's read buffer): a hit then costs an append, and in a long run of
# hits the extra reads are dropped, which a frequency estimate tolerates.
_READ_BUFFER = 64


class TinyLFUPolicy:
    """W-TinyLFU: a window LRU in front of a segmented LRU whose entrance is guarded
    by a frequency sketch; the window is sized by ghost hits, the way ARC sizes its lists.

    Newcomers land in a small LRU window (1% of the capacity to start), so bursts of
    recency still hit.  A key leaving the window must beat the main region's LRU
    victim on estimated frequency to get in: a one-pass scan washes through the
    window without flushing the popular keys.  Main is a segmented LRU: a hit in
    *probation* promotes to *protected* (80% of main).

    With ``adaptive`` the window is sized the way ARC sizes its recency list: two
    ghost lists remember the keys recently evicted from the window and from main
    (keys only, ``ghost`` x capacity each).  A miss on a window ghost means a bigger
    window would have hit, so the window grows; a miss on a main ghost shrinks it.
    Caffeine's hill climber (one step per 10 x capacity requests) was too slow and
    noisy to find recency-heavy optima on the benchmark traces; ghost hits react
    per miss.
    """

    name: ClassVar[str] = "tinylfu"
    __slots__ = (
        "_capacity",
        "_ghost_main",
        "_ghost_max",
        "_ghost_window",
        "_pending",
        "_probation",
        "_protected",
        "_protected_max",
        "_protected_share",
        "_random",
        "_reads",
        "_window",
        "_window_max",
        "adaptive",
        "sketch",
    )

    def __init__(
        self,
        capacity: int,
        *,
        window: float = 0.01,
        protected: float = 0.80,
        adaptive: bool = True,
        ghost: float = 1.0,
        counters_per_entry: int = 4,
        sample_factor: int = 15,
        seed: int = 0,
    ) -> None:
        capacity = max(capacity, 1)
        self._capacity = capacity
        self._protected_share = protected
        self._window_max = max(1, round(capacity * window))
        self._protected_max = int((capacity - self._window_max) * protected)
        # Every region is an LRU list: first key = least recently used.
        self._window: OrderedDict[Hashable, None] = OrderedDict()
        self._probation: OrderedDict[Hashable, None] = OrderedDict()
        self._protected: OrderedDict[Hashable, None] = OrderedDict()
        # Caffeine ages every 10 x capacity increments; 15 measured slightly better
        # here, the adaptive window answering for recency (see benchmarks/).
        self.sketch = FrequencySketch(
            capacity, counters_per_entry=counters_per_entry, sample_factor=sample_factor, seed=seed
        )
        self._random = random.Random(seed)
        self.adaptive = adaptive
        self._ghost_window: OrderedDict[Hashable, None] = OrderedDict()
        self._ghost_main: OrderedDict[Hashable, None] = OrderedDict()
        self._ghost_max = max(1, round(ghost * capacity))
        # The key ``victim`` chose and whether it left from the window: only an eviction
        # (not a deletion) of that key is remembered in a ghost list.
        self._pending: tuple[Hashable, bool] | None = None
        self._reads: list[Hashable] = []

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    @property
    def window_max(self) -> int:
        """Entries the window may hold now (adapts with ``adaptive``)."""
        return self._window_max

    # -- events from the tier -------------------------------------------------------

    def on_hit(self, key: Hashable) -> None:
        if len(self._reads) < _READ_BUFFER:
            self._reads.append(key)

    def _drain(self) -> None:
        """Apply the buffered hits of keys that are still resident."""
        reads, self._reads = self._reads, []
        for key in reads:
            if key in self._window or key in self._probation or key in self._protected:
                self._apply_hit(key)

    def _apply_hit(self, key: Hashable) -> None:
        self.sketch.increment(key)
        if key in self._window:
            self._window.move_to_end(key)
        elif key in self._protected:
            self._protected.move_to_end(key)
        else:
            del self._probation[key]
            self._protected[key] = None
            if len(self._protected) > self._protected_max:
                # The protected segment's LRU gets one more chance in probation.
                demoted, _ = self._protected.popitem(last=False)
                self._probation[demoted] = None

    def on_miss(self, key: Hashable) -> None:
        if self._reads:
            self._drain()
        self.sketch.increment(key)
        if not self.adaptive:
            return
        gw, gm = self._ghost_window, self._ghost_main
        if key in gw:
            # ARC's step: move faster toward the side whose ghost list is the shorter.
            self._resize_window(max(1, len(gm) // len(gw)))
            del gw[key]
        elif key in gm:
            self._resize_window(-max(1, len(gw) // len(gm)))
            del gm[key]

    def on_insert(self, key: Hashable) -> None:
        if self._reads:
            self._drain()
        if key in self._window or key in self._probation or key in self._protected:
            self.on_remove(key)  # a re-insert starts over in the window
        self._window[key] = None
        if len(self._window) > self._window_max and len(self) <= self._capacity:
            # Room in main (the cache is still filling): no contest needed.
            moved, _ = self._window.popitem(last=False)
            self._probation[moved] = None

    def on_remove(self, key: Hashable) -> None:
        if self._reads:
            self._drain()
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == key and self.adaptive:
            ghost = self._ghost_window if pending[1] else self._ghost_main
            ghost[key] = None
            if len(ghost) > self._ghost_max:
                ghost.popitem(last=False)
        # pop(key, 0) is None exactly when the key was there (values are None).
        if self._window.pop(key, 0) is None:
            return
        if self._probation.pop(key, 0) is None:
            return
        self._protected.pop(key, None)

    def victim(self) -> Hashable | None:
        if self._reads:
            self._drain()
        main = self._probation or self._protected
        if not main:
            out = next(iter(self._window), None)
            self._pending = None if out is None else (out, True)
            return out
        main_victim = next(iter(main))
        if len(self._window) > self._window_max:
            # The window's LRU leaves it: it enters probation only if it is more
            # popular than the key it would push out.
            candidate = next(iter(self._window))
            if not self._admit(candidate, main_victim):
                self._pending = (candidate, True)
                return candidate
            del self._window[candidate]
            self._probation[candidate] = None
        self._pending = (main_victim, False)
        return main_victim

    # -- internals ----------------------------------------------------------------

    def _admit(self, candidate: Hashable, victim: Hashable) -> bool:
        candidate_freq = self.sketch.frequency(candidate)
        victim_freq = self.sketch.frequency(victim)
        if candidate_freq > victim_freq:
            return True
        if candidate_freq >= _HASHDOS_THRESHOLD:
            return self._random.getrandbits(7) == 0
        return False

    def _resize_window(self, delta: int) -> None:
        """Grow (or shrink) the window by ``delta`` entries at main's expense."""
        size = min(max(self._window_max + delta, 1), max(self._capacity - 1, 1))
        if size == self._window_max:
            return
        self._window_max = size
        self._protected_max = int((self._capacity - size) * self._protected_share)
        # Shrinking the window hands its LRU keys to probation at once: left for the
        # next evictions, a full window would only trade one key in for one key out.
        while len(self._window) > size:
            moved, _ = self._window.popitem(last=False)
            self._probation[moved] = None
        while len(self._protected) > self._protected_max:
            demoted, _ = self._protected.popitem(last=False)
            self._probation[demoted] = None
