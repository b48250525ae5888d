"""The query log shared through the cache's Redis, so every host warms from what the
whole fleet asks.

One hash per namespace, ``<prefix>:{warm-<ns id>}:log`` (field: entry key, value: the
row as JSON), and a set of the namespaces that have one.  A flush merges this
process's deltas under a short per-namespace lock (``SET NX PX``, released by
compare-and-delete), with the same merge rules as the SQLite log.  Redis trouble
skips the Redis part of a flush: the local log still has everything.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .rows import Row, decayed, merge

if TYPE_CHECKING:
    from .._core import RagCache

__all__ = ["SharedLog"]

_log = logging.getLogger("rag_cache_plugin.warming")
_LOCK_MS = 5_000
_LOCK_WAIT = 2.0
_UNLOCK = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
    "return 0"
)


class SharedLog:
    def __init__(self, cache: RagCache, half_life: float, *, max_rows: int = 100_000) -> None:
        if cache.l3 is None:
            raise ValueError("sharing the query log needs a cache with an L3 (Redis) tier")
        self.cache = cache
        self.l3 = cache.l3
        self.half_life = half_life
        self.max_rows = max_rows
        self.errors = 0

    def _key(self, namespace: str) -> str:
        return f"{self.l3.config.prefix}:{{warm-{self.cache.keys.namespace(namespace)}}}:log"

    @property
    def _index(self) -> str:
        return f"{self.l3.config.prefix}:{{warm}}:namespaces"

    def _up(self) -> bool:
        breaker = self.cache.breakers.get("l3")
        return breaker is None or breaker.state == "closed"

    def merge(self, deltas: Iterable[Row]) -> bool:
        """Merge deltas into the shared rows; False when Redis could not be used."""
        by_ns: dict[str, list[Row]] = {}
        for d in deltas:
            by_ns.setdefault(d.namespace, []).append(d)
        if not by_ns or not self._up():
            return not by_ns
        try:
            client = self.l3.client
            client.sadd(self._index, *by_ns)
            for ns, items in by_ns.items():
                self._merge_ns(client, ns, items)
        except Exception as exc:
            self.errors += 1
            _log.debug("rag-cache warming: sharing the log through Redis failed: %s", exc)
            return False
        return True

    def _merge_ns(self, client: Any, ns: str, items: list[Row]) -> None:
        key, lock, token = self._key(ns), self._key(ns) + ":lock", uuid.uuid4().hex
        deadline = time.monotonic() + _LOCK_WAIT
        while not client.set(lock, token, nx=True, px=_LOCK_MS):
            if time.monotonic() > deadline:
                raise TimeoutError("the shared query log stayed locked")
            time.sleep(0.01)
        try:
            raw = client.hmget(key, [d.key for d in items])
            out: dict[str, str] = {}
            for d, old in zip(items, raw, strict=True):
                row = Row.from_dict(json.loads(old)) if old else None
                out[d.key] = json.dumps(merge(row, d, self.half_life).to_dict(),
                                        separators=(",", ":"))
            client.hset(key, mapping=out)
            if client.hlen(key) > self.max_rows * 1.1:
                self._prune(client, key)
        finally:
            client.register_script(_UNLOCK)(keys=[lock], args=[token])

    def _prune(self, client: Any, key: str) -> None:
        now = time.time()
        rows = [Row.from_dict(json.loads(v)) for v in client.hvals(key)]
        rows.sort(key=lambda r: decayed(r.weight, r.weight_at, now, self.half_life))
        gone = [r.key for r in rows[: len(rows) - self.max_rows]]
        if gone:
            client.hdel(key, *gone)

    def rows(self, namespace: str | None = None) -> list[Row] | None:
        """Every shared row (of one namespace); None when Redis could not be read."""
        if not self._up():
            return None
        try:
            client = self.l3.client
            if namespace is None:
                spaces = sorted(m.decode() if isinstance(m, bytes) else str(m)
                                for m in client.smembers(self._index))
            else:
                spaces = [namespace]
            return [Row.from_dict(json.loads(v)) for ns in spaces
                    for v in client.hvals(self._key(ns))]
        except Exception as exc:
            self.errors += 1
            _log.debug("rag-cache warming: reading the shared log failed: %s", exc)
            return None
