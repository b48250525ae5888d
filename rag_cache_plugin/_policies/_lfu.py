"""Least frequently used, O(1) per operation (Shah, Mitra & Matani, 2010)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import ClassVar

__all__ = ["LFUPolicy"]


class _Bucket:
    """The resident keys read exactly ``count`` times, least recently touched first.

    Buckets form a doubly linked list in increasing ``count`` so that the minimum is
    always the head and a vanished bucket is unlinked in O(1); a dict of counts with
    a ``min_count`` cursor would need a scan when an arbitrary removal empties it.
    """

    __slots__ = ("count", "keys", "next", "prev")

    def __init__(self, count: int, prev: _Bucket | None, nxt: _Bucket | None) -> None:
        self.count = count
        self.keys: OrderedDict[Hashable, None] = OrderedDict()
        self.prev = prev
        self.next = nxt


class LFUPolicy:
    """Evicts the resident key with the fewest accesses since it became resident;
    ties go to the least recently accessed.

    Counts are not aged and are forgotten on removal: this is in-cache LFU, good for
    a stable popularity skew, slow to let go of keys that were popular once.  The key
    inserted last is evicted last until the next lookup: the tier inserts before it
    evicts, and classic LFU makes room *for* a newcomer rather than rejecting it.
    """

    name: ClassVar[str] = "lfu"
    __slots__ = ("_bucket_of", "_head", "_newest")

    def __init__(self, capacity: int = 0) -> None:
        del capacity  # buckets grow with residents only
        # Sentinel bucket of count 0: its ``next`` is the least frequent bucket.
        self._head = _Bucket(0, None, None)
        self._bucket_of: dict[Hashable, _Bucket] = {}
        self._newest: Hashable | None = None

    def __len__(self) -> int:
        return len(self._bucket_of)

    def on_hit(self, key: Hashable) -> None:
        self._newest = None
        bucket = self._bucket_of[key]
        nxt = bucket.next
        if nxt is None or nxt.count != bucket.count + 1:
            nxt = _Bucket(bucket.count + 1, bucket, nxt)
            if bucket.next is not None:
                bucket.next.prev = nxt
            bucket.next = nxt
        nxt.keys[key] = None
        self._bucket_of[key] = nxt
        del bucket.keys[key]
        if not bucket.keys:
            self._unlink(bucket)

    def on_miss(self, key: Hashable) -> None:
        self._newest = None

    def on_insert(self, key: Hashable) -> None:
        if key in self._bucket_of:  # re-insert of a resident key counts as an access
            self.on_hit(key)
            return
        head = self._head
        first = head.next
        if first is None or first.count != 1:
            first = _Bucket(1, head, first)
            if head.next is not None:
                head.next.prev = first
            head.next = first
        first.keys[key] = None
        self._bucket_of[key] = first
        self._newest = key

    def on_remove(self, key: Hashable) -> None:
        bucket = self._bucket_of.pop(key, None)
        if bucket is None:
            return
        if key == self._newest:
            self._newest = None
        del bucket.keys[key]
        if not bucket.keys:
            self._unlink(bucket)

    def victim(self) -> Hashable | None:
        first = self._head.next
        if first is None:
            return None
        key = next(iter(first.keys))
        # The newcomer is the most recent key of count 1, so it is first only when alone.
        if key == self._newest and first.next is not None:
            return next(iter(first.next.keys))
        return key

    @staticmethod
    def _unlink(bucket: _Bucket) -> None:
        prev, nxt = bucket.prev, bucket.next
        assert prev is not None  # only the sentinel has no prev, and it is never unlinked
        prev.next = nxt
        if nxt is not None:
            nxt.prev = prev
        bucket.prev = bucket.next = None
