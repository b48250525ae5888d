"""What the tuner learns from the event bus itself: a bounded sample of recent L1
lookup keys (for shadow simulations) and misses that follow an expiry (for TTL).

Both are cheap on the hot path: a hit or a miss costs a type check, a slice and
a ``deque.append``; nothing here takes a lock.  Counters are plain integers, so
under heavy multi-threaded load an increment may now and then be lost: the
tuner reads rates, not exact counts.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from .._events import CacheEvent, EventBus, Expired, Hit, Miss

__all__ = ["Signals", "WindowSignals"]

_SPACE = 1 << 32


@dataclass(frozen=True, slots=True)
class WindowSignals:
    """Counts since the previous window closed."""

    expired_misses: int
    sampled: int


def _position(key: str) -> int:
    """Where a key falls in [0, 2**32): its hash prefix (entry keys are hex digests)."""
    try:
        return int(key[:8], 16)
    except ValueError:
        return hash(key) % _SPACE


class Signals:
    """A bus listener.  ``rate`` is the spatial sampling rate: a key is sampled when
    its hash falls in the first ``rate`` of the hash space, so every access of a
    sampled key is kept and a cache of ``rate * capacity`` entries on the sample
    behaves like the full cache on the full stream (miniature simulation, as in
    SHARDS and Caffeine's simulator)."""

    def __init__(self, *, sample_size: int, rate: float, expired_memory: int = 65_536) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError("rate must be in (0, 1]")
        self.rate = rate
        self._threshold = int(rate * _SPACE)
        self._sample: deque[str] = deque(maxlen=sample_size)
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._expired_max = expired_memory
        self._expired_misses = 0
        self._sampled = 0
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, bus: EventBus) -> None:
        self._unsubscribe = bus.subscribe(self.listener, (Hit, Miss, Expired))

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _keep(self, key: str) -> None:
        if self._threshold >= _SPACE or _position(key) < self._threshold:
            self._sample.append(key)
            self._sampled += 1

    def listener(self, ev: CacheEvent) -> None:
        t = type(ev)
        if t is Hit:
            # A semantic hit names the entry it matched, not the key looked up in L1.
            if ev.kind == "exact":  # type: ignore[attr-defined]
                self._keep(ev.key)
                if self._expired:  # found again (in a lower tier): not an expiry miss
                    self._expired.pop(ev.key, None)
        elif t is Miss:
            self._keep(ev.key)
            if self._expired and self._expired.pop(ev.key, 0) is None:
                self._expired_misses += 1
        elif t is Expired:
            expired = self._expired
            expired[ev.key] = None
            if len(expired) > self._expired_max:
                expired.popitem(last=False)

    def take(self) -> WindowSignals:
        """The counts since the last ``take`` (and start counting anew)."""
        out = WindowSignals(self._expired_misses, self._sampled)
        self._expired_misses -= out.expired_misses
        self._sampled -= out.sampled
        return out

    def peek(self) -> WindowSignals:
        """The counts since the last ``take``, left as they are."""
        return WindowSignals(self._expired_misses, self._sampled)

    def sample(self) -> list[str]:
        """The sampled keys, oldest first."""
        for _ in range(10):
            try:  # a C-level copy, atomic under the GIL; retried should a writer interleave
                return list(self._sample)
            except RuntimeError:
                continue
        return []

    def __len__(self) -> int:
        return len(self._sample)
