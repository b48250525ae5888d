"""Filling a partition's index from the shared tiers on its first use in a process.

L2 entries carry their vector in the envelope; it is trusted when L2 records no
embedding model for the namespace other than ours (otherwise, and for entries stored
without a vector, the question is embedded again, once, up to a bound).  L3's
per-partition vector hash is tagged with the model, so it is always comparable.
A source that fails leaves the partition marked unloaded, to be retried later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ._keys import canonicalize
from ._vector_index import SemanticIndex

if TYPE_CHECKING:
    from ._semantic import SemanticMatcher
    from ._tiers import Tier

__all__ = ["PartitionLoader"]

_log = logging.getLogger("rag_cache_plugin")

_RETRY = 5.0  # seconds before a partially loaded partition is read again
_EMBED_MAX = 10_000  # questions re-embedded per partition load, at most
_EMBED_BATCH = 256

T = TypeVar("T")
Row = tuple[str, np.ndarray | None, float | None]  # question, vector, expires


class PartitionLoader:
    """Reads one partition from L2 and L3 into its ``SemanticIndex``."""

    def __init__(self, matcher: SemanticMatcher) -> None:
        self.m = matcher

    def _read(self, tier: Tier, namespace: str, fn: Callable[[], Iterable[T]]) -> list[T] | None:
        """Run a read behind the tier's breaker; None when it did not answer."""
        cache = self.m.cache
        breaker = cache.breakers[tier.name]
        if not breaker.allow():
            return None
        started = perf_counter()
        try:
            out = list(fn())
        except Exception as exc:
            cache._failed(tier, "load", exc, namespace, started)
            return None
        breaker.success()
        return out

    def load(self, idx: SemanticIndex, namespace: str, partition: str, now: float) -> None:
        m, cache = self.m, self.m.cache
        with idx.lock:  # news for this partition waits until the load is applied
            if idx.loaded:
                return
            complete = True
            raw: dict[str, tuple[str, bytes | None, float | None]] = {}
            if cache.l2 is not None:
                l2 = cache.l2
                models = m.shared.l2_models(namespace)
                trusted = models is not None and models <= {m.model_id}
                entries = self._read(l2, namespace, lambda: l2.iter_entries(namespace, partition))
                if entries is None:
                    complete = False
                for e in entries or ():
                    raw[e.key] = (e.question, e.vector if trusted else None, e.expires)
            if cache.l3 is not None:
                l3 = cache.l3
                records = self._read(l3, namespace,
                                     lambda: m.shared.load_l3(namespace, partition, now))
                if records is None:
                    complete = False
                for r in records or ():
                    if raw.get(r.key, ("", None, None))[1] is None:
                        raw[r.key] = (r.question, r.vector, r.expires)
            raw = {k: v for k, v in raw.items() if k not in idx}
            # Only a partition with something in it is worth learning the width for.
            fresh: dict[str, Row] = {}
            if raw and m.learn_dim(namespace):
                fresh = {k: (q, m.as_vector(v), x) for k, (q, v, x) in raw.items()}
            self._embed_missing(fresh, namespace)
            idx.add_many([(k, q, v, x) for k, (q, v, x) in fresh.items() if v is not None])
            for key in fresh:
                m._where[key] = partition
            idx.loaded = complete
            if not complete:
                idx.retry_at = now + _RETRY

    def _embed_missing(self, rows: dict[str, Row], namespace: str) -> None:
        missing = [k for k, (_, v, _x) in rows.items() if v is None]
        if len(missing) > _EMBED_MAX:
            _log.warning("rag-cache: %d entries without a usable vector; embedding %d of them",
                         len(missing), _EMBED_MAX)
            missing = missing[:_EMBED_MAX]
        for i in range(0, len(missing), _EMBED_BATCH):
            chunk = missing[i:i + _EMBED_BATCH]
            vecs: list[Any] = self.m.embed_many([canonicalize(rows[k][0]) for k in chunk],
                                                namespace)
            for k, vec in zip(chunk, vecs, strict=True):
                q, _, x = rows[k]
                rows[k] = (q, vec, x)
