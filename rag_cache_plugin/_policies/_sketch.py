"""A count-min sketch of 4-bit counters with periodic halving (TinyLFU's frequency
estimate, as in Caffeine's ``FrequencySketch``)."""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["FrequencySketch"]

_MAX_COUNT = 15  # 4-bit saturating counters: popularity beyond 15 does not matter
_HALVE = bytes(i >> 1 for i in range(256))
_ODD = bytes(i & 1 for i in range(256))


class FrequencySketch:
    """Approximate access counts of recent keys in fixed memory.

    Four rows of ``width`` counters; a key's counter in each row is a slice of one
    64-bit hash, and its estimate is the minimum over the rows.  After
    ``sample_size`` increments every counter is halved, so the sketch forgets old
    popularity and stays fresh.

    Counters live one per byte: packing two per byte would halve the memory but cost
    more Python bytecode per access than it saves.  Hashing is ``hash((key, seed))``:
    one C call that mixes well even for small ints (``hash(7) == 7``); for ``str`` keys
    it follows ``PYTHONHASHSEED``, so only runs under the same one repeat exactly.
    """

    __slots__ = ("_mask", "_seed", "_shift", "_table", "_width", "additions", "sample_size")

    def __init__(
        self,
        capacity: int,
        *,
        counters_per_entry: int = 4,
        sample_factor: int = 10,
        seed: int = 0,
    ) -> None:
        capacity = max(capacity, 1)
        bits = max(capacity * counters_per_entry - 1, 15).bit_length()  # >= 16 counters
        self._width = 1 << bits
        self._mask = self._width - 1
        # Rows read disjoint bit slices while they fit in 64 bits (up to 2**16 counters
        # a row), overlapping ones beyond: still distinct functions of the hash.
        self._shift = min(bits, (64 - bits) // 3)
        self._table = bytearray(4 * self._width)
        self._seed = seed
        self.sample_size = sample_factor * capacity
        self.additions = 0

    def __len__(self) -> int:
        """Number of counters (fixed: the sketch never grows)."""
        return len(self._table)

    # The index arithmetic is written out in both methods: a shared helper returning
    # a tuple costs a call and an allocation on the hottest path of the policy.

    def frequency(self, key: Hashable) -> int:
        """Estimated recent accesses of ``key``, 0..15."""
        h = hash((key, self._seed))
        m, w, s, t = self._mask, self._width, self._shift, self._table
        return min(
            t[h & m],
            t[w + ((h >> s) & m)],
            t[2 * w + ((h >> 2 * s) & m)],
            t[3 * w + ((h >> 3 * s) & m)],
        )

    def increment(self, key: Hashable) -> None:
        """Count one access of ``key``; halve everything once a sample is complete."""
        h = hash((key, self._seed))
        m, w, s, t = self._mask, self._width, self._shift, self._table
        added = False
        for i in (
            h & m,
            w + ((h >> s) & m),
            2 * w + ((h >> 2 * s) & m),
            3 * w + ((h >> 3 * s) & m),
        ):
            if t[i] < _MAX_COUNT:
                t[i] += 1
                added = True
        if added:
            self.additions += 1
            if self.additions >= self.sample_size:
                self.reset()

    def reset(self) -> None:
        """Halve every counter (aging).  ``bytes.translate`` runs the O(width) pass in C;
        it happens once per ``sample_size`` additions, so it is O(1) amortized."""
        # Halving drops each odd counter's low bit; Caffeine subtracts that truncation
        # (a quarter per counter, four counters per key) from the addition count.
        odd = len(self._table) - self._table.translate(_ODD).count(0)
        self._table = self._table.translate(_HALVE)
        self.additions = max(0, (self.additions - odd // 4) // 2)
