"""L1: the in-process tier.  Bounded by entries and bytes, TTL, pluggable eviction."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from .._entry import Entry
from .._events import Evicted, Expired, TierName
from .._policies import EvictionPolicy, make_policy
from . import Emit, Ref

__all__ = ["MemoryTier"]

# Python object overhead of a cached entry beyond its encoded size, for the byte bound.
_OVERHEAD = 256


class MemoryTier:
    """Thread-safe dict + eviction policy.  Async methods are the sync ones: a
    memory access is cheaper than any await."""

    name: TierName = "l1"

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        policy: str | EvictionPolicy = "lru",
        max_age: float | None = None,
        emit: Emit | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._policy = make_policy(policy, max_entries) if isinstance(policy, str) else policy
        # key -> (entry, deadline): deadline is the entry's expiry capped by max_age.
        self._data: dict[str, tuple[Entry, float | None]] = {}
        self._tags: dict[tuple[str, str], set[str]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._emit = emit

    # -- introspection ------------------------------------------------------------

    @property
    def policy(self) -> EvictionPolicy:
        return self._policy

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._data)

    # -- reads --------------------------------------------------------------------

    def get(self, ref: Ref, now: float) -> Entry | None:
        key = ref.key
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self._policy.on_miss(key)
                return None
            entry, deadline = item
            if deadline is None or deadline > now:
                self._policy.on_hit(key)
                return entry
            self._remove(key)
        if self._emit is not None:
            self._emit(Expired(entry.namespace, key, "l1"))
        return None

    def find(self, key: str, clock: Callable[[], float]) -> Entry | None:
        """``get`` for the lookup hot path: reads the clock only for an entry that
        can expire, so a hit on an entry without TTL never pays for it."""
        # acquire/release rather than ``with``: measurably cheaper on this hot path.
        lock = self._lock
        lock.acquire()
        try:
            item = self._data.get(key)
            if item is None:
                self._policy.on_miss(key)
                return None
            entry, deadline = item
            if deadline is None or deadline > clock():
                self._policy.on_hit(key)
                return entry
            self._remove(key)
        finally:
            lock.release()
        if self._emit is not None:
            self._emit(Expired(entry.namespace, key, "l1"))
        return None

    def peek(self, key: str, now: float) -> Entry | None:
        """The live entry under ``key`` without counting an access: background
        readers (warming) must not sway the eviction policy."""
        item = self._data.get(key)
        if item is None:
            return None
        entry, deadline = item
        return entry if deadline is None or deadline > now else None

    def get_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for ref in refs:
            entry = self.get(ref, now)
            if entry is not None:
                out[ref.key] = entry
        return out

    # -- writes -------------------------------------------------------------------

    def set(self, entry: Entry, now: float, *, newer_only: bool = False) -> None:
        """Keep ``entry``.  ``newer_only`` (promotion from a lower tier) leaves an entry
        at least as new in place: a lookup that read version N below must not
        overwrite version N+1 that a concurrent store put here meanwhile."""
        if self.max_entries <= 0 or self.max_bytes <= 0:
            return
        deadline = entry.expires
        if self.max_age is not None:
            cap = now + self.max_age
            deadline = cap if deadline is None else min(deadline, cap)
        size = entry.size + _OVERHEAD
        evicted: list[Entry] = []
        with self._lock:
            current = self._data.get(entry.key)
            if current is not None:
                if newer_only and current[0].created >= entry.created:
                    return
                self._remove(entry.key)
            self._data[entry.key] = (entry, deadline)
            self._bytes += size
            for tag in entry.tags:
                self._tags.setdefault((entry.namespace, tag), set()).add(entry.key)
            self._policy.on_insert(entry.key)
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                victim = self._policy.victim()
                if victim is None or victim not in self._data:
                    break
                evicted.append(self._remove(victim))
        if self._emit is not None:
            for e in evicted:
                self._emit(Evicted(e.namespace, e.key, "l1"))

    def _remove(self, key: str) -> Entry:
        entry, _ = self._data.pop(key)
        self._bytes -= entry.size + _OVERHEAD
        for tag in entry.tags:
            keys = self._tags.get((entry.namespace, tag))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[(entry.namespace, tag)]
        self._policy.on_remove(key)
        return entry

    def delete(self, refs: Iterable[Ref]) -> None:
        self.discard(ref.key for ref in refs)

    def discard(self, keys: Iterable[str]) -> None:
        """Drop keys if present (news from peers names keys only)."""
        with self._lock:
            for key in keys:
                if key in self._data:
                    self._remove(key)

    def invalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]:
        removed: list[Ref] = []
        with self._lock:
            for tag in tags:
                for key in list(self._tags.get((namespace, tag), ())):
                    if key in self._data:
                        e = self._remove(key)
                        removed.append(Ref(key, e.namespace, e.partition))
        return removed

    def clear(self, namespace: str | None = None) -> None:
        with self._lock:
            for key in [k for k, (e, _) in self._data.items()
                        if namespace is None or e.namespace == namespace]:
                self._remove(key)

    def resize(self, *, max_entries: int | None = None, max_bytes: int | None = None) -> None:
        """Change the bounds at run time (the tuner does); evicts down to them."""
        if max_entries is not None:
            self.max_entries = max_entries
        if max_bytes is not None:
            self.max_bytes = max_bytes
        evicted: list[Entry] = []
        with self._lock:
            while self._data and (len(self._data) > self.max_entries
                                  or self._bytes > self.max_bytes):
                victim = self._policy.victim()
                if victim is None or victim not in self._data:
                    break
                evicted.append(self._remove(victim))
        if self._emit is not None:
            for e in evicted:
                self._emit(Evicted(e.namespace, e.key, "l1"))

    def set_policy(self, policy: str | EvictionPolicy) -> None:
        """Swap the eviction policy, keeping the resident keys (oldest first)."""
        new = make_policy(policy, self.max_entries) if isinstance(policy, str) else policy
        with self._lock:
            for key in self._data:
                new.on_insert(key)
            self._policy = new

    def close(self) -> None:
        self.clear()

    # -- async twins --------------------------------------------------------------

    async def aget(self, ref: Ref, now: float) -> Entry | None:
        return self.get(ref, now)

    async def aget_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]:
        return self.get_many(refs, now)

    async def aset(self, entry: Entry, now: float) -> None:
        self.set(entry, now)

    async def adelete(self, refs: Iterable[Ref]) -> None:
        self.delete(refs)

    async def ainvalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]:
        return self.invalidate(namespace, tags)

    async def aclear(self, namespace: str | None = None) -> None:
        self.clear(namespace)

    async def aclose(self) -> None:
        self.close()
