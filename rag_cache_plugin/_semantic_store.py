"""Where the semantic layer keeps what must outlive a process or reach other hosts.

L3 holds, per partition and embedding model, one hash ``key -> question + vector``
(``<prefix>:<ns>:{<partition>}:v:<model>``: the partition's hash tag puts it in the
slot of the partition's entries, and ``clear`` removes it with them).  A process that
shares only Redis loads a partition from there.  Fields whose entry expired are
dropped when seen; the hash itself lives as long as its longest-lived member.

Feedback (tightened thresholds, blocked pairs, confirmations) lives in L2's
``semantic`` table and in one L3 hash per namespace (``<prefix>~fb:{<ns>}``, outside
the entry key space so ``clear`` keeps it).

L3 writes of vectors go through one background thread in batches: a store never
waits for them, which matters on the async path.
"""

from __future__ import annotations

import logging
import math
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._core import RagCache
    from ._entry import Entry

__all__ = ["FeedbackState", "SharedState", "VectorRecord", "pack", "unpack"]

_log = logging.getLogger("rag_cache_plugin")

_HEAD = struct.Struct("<dI")  # expires (NaN: never), question length in bytes
_BATCH = 256

# A vector hash lives as long as its longest-lived member; "no expiry" counts as ten
# years so that one rule (PEXPIRE NX, then GT) covers both and needs no script
# (cluster pipelines cannot run scripts).
_FOREVER_MS = 10 * 365 * 86_400_000


class VectorRecord(NamedTuple):
    key: str
    question: str
    vector: bytes
    expires: float | None


def pack(question: str, vector: bytes, expires: float | None) -> bytes:
    """Binary member of a vector hash (no pickle: plain struct + UTF-8 + float32)."""
    q = question.encode("utf-8", "surrogatepass")
    return _HEAD.pack(math.nan if expires is None else expires, len(q)) + q + vector


def unpack(raw: bytes) -> tuple[str, bytes, float | None]:
    """Inverse of ``pack``; ValueError for anything malformed."""
    if len(raw) < _HEAD.size:
        raise ValueError("short vector record")
    expires, qlen = _HEAD.unpack_from(raw)
    end = _HEAD.size + qlen
    if end > len(raw):
        raise ValueError("bad vector record")
    question = raw[_HEAD.size:end].decode("utf-8", "surrogatepass")
    return question, raw[end:], None if math.isnan(expires) else expires


@dataclass
class FeedbackState:
    """What feedback taught about one namespace (for this embedding model)."""

    thresholds: dict[str, float] = field(default_factory=dict)
    blocked: set[tuple[str, str, str]] = field(default_factory=set)
    """(partition, query hash, entry key)"""
    confirmed: dict[str, int] = field(default_factory=dict)


class SharedState:
    """L2/L3 persistence of the semantic layer of one ``RagCache``."""

    def __init__(self, cache: RagCache, model_id: str, model_tag: str) -> None:
        self.cache = cache
        self.model_id = model_id
        self.tag = model_tag
        self._queue: queue.SimpleQueue[tuple[str, Callable[[Any], None]] | None] = (
            queue.SimpleQueue())
        self._pending = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._script: Any = None

    # -- naming -------------------------------------------------------------------

    def vec_key(self, namespace: str, partition: str) -> str:
        l3 = self.cache.l3
        assert l3 is not None
        return f"{l3.config.prefix}:{l3._ns(namespace)}:{{{partition}}}:v:{self.tag}"

    def fb_key(self, namespace: str) -> str:
        l3 = self.cache.l3
        assert l3 is not None
        return f"{l3.config.prefix}~fb:{{{l3._ns(namespace)}}}"

    # -- L3 vectors: background writes ------------------------------------------------

    def _submit(self, namespace: str, op: Callable[[Any], None]) -> None:
        if self.cache.l3 is None:
            return
        with self._cond:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rag-cache-vectors",
                                                daemon=True)
                self._thread.start()
        self._queue.put((namespace, op))

    def put_vector(self, entry: Entry, now: float) -> None:
        if entry.vector is None or self.cache.l3 is None:
            return
        left = entry.remaining(now)
        if left is not None and left <= 0:
            return
        name = self.vec_key(entry.namespace, entry.partition)
        member = pack(entry.question, entry.vector, entry.expires)
        ttl = _FOREVER_MS if left is None else max(1, int(left * 1000))
        key = entry.key

        def put(pipe: Any) -> None:
            pipe.hset(name, key, member)
            pipe.pexpire(name, ttl, nx=True)
            pipe.pexpire(name, ttl, gt=True)

        self._submit(entry.namespace, put)

    def drop_vectors(self, namespace: str, partition: str, keys: list[str]) -> None:
        if keys and self.cache.l3 is not None:
            name = self.vec_key(namespace, partition)
            self._submit(namespace, lambda pipe: pipe.hdel(name, *keys))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ops = [b for b in batch if b is not None]
            if ops:
                self._execute(ops)
            with self._cond:
                self._pending -= len(ops)
                self._cond.notify_all()
            if None in batch:
                return

    def _execute(self, ops: list[tuple[str, Callable[[Any], None]]]) -> None:
        l3 = self.cache.l3
        assert l3 is not None
        breaker = self.cache.breakers["l3"]
        if not breaker.allow():
            return  # dropped: peers still learn through the news; loads self-heal
        started = perf_counter()
        try:
            pipe = l3.client.pipeline(transaction=False)
            for _, op in ops:
                op(pipe)
            pipe.execute()
        except Exception as exc:
            self.cache._failed(l3, "vectors", exc, ops[0][0], started)
            return
        breaker.success()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued L3 write was attempted."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        self.flush(timeout=2.0)
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=2.0)
            self._thread = None

    # -- L3 vectors: loading ------------------------------------------------------------

    def load_l3(self, namespace: str, partition: str, now: float) -> Iterator[VectorRecord]:
        """Live members of a partition's vector hash; expired ones are deleted.
        Raises on I/O failure (the caller decides about the breaker)."""
        l3 = self.cache.l3
        assert l3 is not None
        name = self.vec_key(namespace, partition)
        stale: list[bytes] = []
        for field_name, raw in l3.client.hscan_iter(name, count=1000):
            try:
                question, vector, expires = unpack(raw)
            except (ValueError, UnicodeDecodeError):
                stale.append(field_name)
                continue
            if expires is not None and expires <= now:
                stale.append(field_name)
                continue
            yield VectorRecord(field_name.decode("ascii", "replace"), question, vector, expires)
        if stale:
            l3.client.hdel(name, *stale)

    # -- feedback -------------------------------------------------------------------------

    def load_feedback(self, namespace: str) -> FeedbackState:
        """Merge what L2 and L3 remember (thresholds: the strictest wins)."""
        state = FeedbackState()
        cache = self.cache
        if cache.l2 is not None:
            l2 = cache.l2
            rows = cache._tier_call(l2, "feedback", namespace,
                                    lambda: l2.semantic_rows(namespace))
            for partition, kind, name, value in rows if isinstance(rows, list) else ():
                self._apply(state, partition, kind, name, value)
        if cache.l3 is not None:
            l3 = cache.l3
            raw = cache._tier_call(l3, "feedback", namespace,
                                   lambda: l3.client.hgetall(self.fb_key(namespace)))
            for k, v in raw.items() if isinstance(raw, dict) else ():
                parts = k.decode().split("|")
                if len(parts) >= 3:
                    self._apply(state, parts[1], parts[0], "|".join(parts[2:]), float(v))
        return state

    def _apply(self, state: FeedbackState, partition: str, kind: str, name: str,
               value: float) -> None:
        if kind == "threshold" and name == self.tag:
            state.thresholds[partition] = max(value, state.thresholds.get(partition, -1.0))
        elif kind == "block":
            qhash, _, key = name.partition(":")
            state.blocked.add((partition, qhash, key))
        elif kind == "confirm" and name == self.tag:
            state.confirmed[partition] = max(int(value), state.confirmed.get(partition, 0))

    def save_feedback(self, namespace: str, partition: str, kind: str, name: str,
                      value: float, merge: str) -> None:
        """Write one fact to L2 and L3 (synchronously: feedback is rare)."""
        cache = self.cache
        if cache.l2 is not None:
            l2 = cache.l2
            cache._tier_call(l2, "feedback", namespace, lambda: l2.semantic_put(
                namespace, partition, kind, name, value, merge))
        if cache.l3 is not None:
            l3 = cache.l3
            fkey, field_name = self.fb_key(namespace), f"{kind}|{partition}|{name}"

            def write() -> None:
                c = l3.client
                if merge == "add":
                    c.hincrbyfloat(fkey, field_name, value)
                elif merge == "max":
                    old = c.hget(fkey, field_name)
                    if old is None or float(old) < value:
                        c.hset(fkey, field_name, repr(value))
                else:
                    c.hset(fkey, field_name, repr(value))

            cache._tier_call(l3, "feedback", namespace, write)

    # -- which models wrote the vectors in L2 entries ------------------------------------------

    def note_model(self, namespace: str) -> None:
        l2 = self.cache.l2
        if l2 is not None:
            self.cache._tier_call(l2, "feedback", namespace, lambda: l2.semantic_put(
                namespace, "", "model", self.model_id, time.time(), "set"))

    def l2_models(self, namespace: str) -> set[str] | None:
        """Models recorded for a namespace's L2 entries; None when L2 did not answer."""
        l2 = self.cache.l2
        if l2 is None:
            return set()
        rows = self.cache._tier_call(l2, "feedback", namespace,
                                     lambda: l2.semantic_rows(namespace))
        if not isinstance(rows, list):
            return None
        return {name for _p, kind, name, _v in rows if kind == "model"}
