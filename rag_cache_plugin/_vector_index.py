"""``SemanticIndex``: the vectors of one partition's cached questions.

Rows live in slots.  Removal zeroes a slot and puts it on a free list (O(1)); adds
reuse free slots, and an index that shrank to a quarter of its slots is compacted.
Small partitions are searched exactly (one matrix-vector product over a
preallocated float32 matrix); from ``ann_threshold`` rows on, an HNSW index from
``usearch`` (the ``ann`` extra) takes over when it is installed.  Cosines of ANN
candidates are approximate (float16 storage); the matcher re-scores the winner
from the entry's own vector, so a decision never rests on the approximation.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ANN_EPSILON", "Candidate", "SemanticIndex", "usearch_available"]

_log = logging.getLogger("rag_cache_plugin")

ANN_EPSILON = 0.01
"""Slack given to ANN cosines (float16 rounding) when filtering against a floor."""
_INITIAL = 16


def usearch_available() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


class Candidate(NamedTuple):
    key: str
    question: str
    cosine: float


class _Exact:
    """Brute force over a float32 matrix; dead rows are zero so they score 0."""

    approximate = False

    def __init__(self, dim: int, capacity: int) -> None:
        self.mat = np.zeros((capacity, dim), dtype=np.float32)

    def grow(self, capacity: int) -> None:
        bigger = np.zeros((capacity, self.mat.shape[1]), dtype=np.float32)
        bigger[: len(self.mat)] = self.mat
        self.mat = bigger

    def put(self, slot: int, vec: np.ndarray) -> None:
        self.mat[slot] = vec

    def drop(self, slot: int) -> None:
        self.mat[slot] = 0.0

    def search(self, q: np.ndarray, used: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.mat[:used] @ q
        top = np.argpartition(scores, used - k)[used - k:] if k < used else np.arange(used)
        order = top[np.argsort(-scores[top], kind="stable")]
        return order, scores[order]

    def vectors(self, slots: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.mat[slots]
        return out

    @property
    def nbytes(self) -> int:
        return int(self.mat.nbytes)


# HNSW finds the true nearest question less often as the graph grows: a wider search
# keeps it finding it (on random 384-d vectors, the hardest case: 94% at 100,000 with
# 128; at 200,000, 81% with 128 and 94% with 256), within the latency budget.
_EF_BASE = 128
_EF_MAX = 384


def _search_breadth(size: int) -> int:
    """usearch's ``expansion_search`` for an index of ``size`` vectors."""
    return min(_EF_MAX, max(_EF_BASE, _EF_BASE * (size // 100_000)))


class _Usearch:
    """HNSW (usearch) keyed by slot number; float16 storage halves the memory."""

    approximate = True

    def __init__(self, dim: int, *, dtype: str = "f16") -> None:
        from usearch.index import Index

        self.index = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=16,
                           expansion_add=64, expansion_search=_EF_BASE)
        self._ef = _EF_BASE

    def grow(self, capacity: int) -> None:
        pass  # usearch grows by itself

    def put(self, slot: int, vec: np.ndarray) -> None:
        if self.index.contains(slot):
            self.index.remove(slot)
        self.index.add(slot, vec)

    def put_many(self, slots: np.ndarray, mat: np.ndarray) -> None:
        self.index.add(slots.astype(np.uint64), mat, threads=0)

    def drop(self, slot: int) -> None:
        self.index.remove(slot)

    def search(self, q: np.ndarray, used: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        ef = _search_breadth(len(self.index))
        if ef != self._ef:
            # The property has a setter; usearch's type hints declare it read-only.
            self.index.expansion_search = self._ef = ef  # type: ignore[misc]
        m = self.index.search(q, k)
        return m.keys.astype(np.int64), 1.0 - m.distances.astype(np.float32)

    def vectors(self, slots: np.ndarray) -> np.ndarray:
        return np.asarray(self.index.get(slots.astype(np.uint64)), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.index.memory_usage)


@dataclass
class IndexStats:
    size: int
    slots: int
    backend: str
    vector_bytes: int


class SemanticIndex:
    """One partition's questions and vectors; thread-safe."""

    def __init__(self, dim: int | None = None, *, ann_threshold: int | None = 5_000) -> None:
        self.dim = dim
        """Width of the vectors; taken from the first row when not given."""
        self.ann_threshold = ann_threshold if ann_threshold and usearch_available() else None
        self.loaded = False
        """Set by the matcher once L2/L3 were read for this partition."""
        self.retry_at = 0.0  # when a partial load may be retried
        self.next_reap = 0.0  # when to sweep expired rows next
        self.lock = threading.RLock()
        self._store: _Exact | _Usearch = _Exact(dim or 0, _INITIAL)
        self._cap = _INITIAL
        self._used = 0  # slots handed out so far (high-water mark)
        self._keys: list[str | None] = []
        self._questions: list[str | None] = []
        self._expires = np.full(_INITIAL, np.inf)
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._adds = 0

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    @property
    def approximate(self) -> bool:
        return self._store.approximate

    # -- changes ------------------------------------------------------------------

    def add(self, key: str, question: str, vec: np.ndarray, expires: float | None) -> None:
        """Insert or replace ``key`` (``vec`` must be a unit float32 row of ``dim``)."""
        with self.lock:
            if self.dim is None:
                self.dim = int(vec.shape[0])
                self._store = _Exact(self.dim, self._cap)
            elif vec.shape[0] != self.dim:
                raise ValueError(f"vector of {vec.shape[0]} dimensions in an index of {self.dim}")
            slot = self._slot.get(key)
            if slot is None:
                slot = self._take_slot()
                self._slot[key] = slot
                self._keys[slot] = key
            self._questions[slot] = question
            self._expires[slot] = np.inf if expires is None else expires
            self._store.put(slot, vec)
            self._adds += 1
            if (self.ann_threshold is not None and isinstance(self._store, _Exact)
                    and len(self._slot) >= self.ann_threshold):
                self._to_ann()

    def add_many(self, rows: list[tuple[str, str, np.ndarray, float | None]]) -> None:
        """Insert many rows; one batched build when the ANN index takes over (loads)."""
        with self.lock:
            ann, self.ann_threshold = self.ann_threshold, None
            try:
                for key, question, vec, expires in rows:
                    self.add(key, question, vec, expires)
            finally:
                self.ann_threshold = ann
            if ann is not None and isinstance(self._store, _Exact) and len(self._slot) >= ann:
                self._to_ann()

    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop()
        if self._used == self._cap:
            self._cap *= 2
            self._store.grow(self._cap)
            grown = np.full(self._cap, np.inf)
            grown[: self._used] = self._expires[: self._used]
            self._expires = grown
        self._keys.append(None)
        self._questions.append(None)
        self._used += 1
        return self._used - 1

    def remove(self, key: str) -> bool:
        with self.lock:
            slot = self._slot.pop(key, None)
            if slot is None:
                return False
            self._store.drop(slot)
            self._keys[slot] = self._questions[slot] = None
            self._expires[slot] = np.inf
            self._free.append(slot)
            if isinstance(self._store, _Exact) and self._used > 1024 \
                    and len(self._slot) < self._used // 4:
                self._compact()
            return True

    def reap(self, now: float) -> list[str]:
        """Remove rows whose entry expired; returns their keys."""
        with self.lock:
            dead = np.nonzero(self._expires[: self._used] <= now)[0]
            keys = [k for s in dead.tolist() if (k := self._keys[s]) is not None]
            for k in keys:
                self.remove(k)
            return keys

    def _compact(self) -> None:
        """Renumber live rows into a right-sized matrix (exact backend only)."""
        assert self.dim is not None
        live = np.array(sorted(self._slot.values()), dtype=np.int64)
        cap = max(_INITIAL, 1 << max(0, int(len(live) * 2 - 1).bit_length()))
        store = _Exact(self.dim, cap)
        store.mat[: len(live)] = self._store.vectors(live)
        expires = np.full(cap, np.inf)
        expires[: len(live)] = self._expires[live]
        self._keys = [self._keys[s] for s in live.tolist()]
        self._questions = [self._questions[s] for s in live.tolist()]
        self._slot = {k: i for i, k in enumerate(self._keys) if k is not None}
        self._store, self._cap, self._used, self._expires = store, cap, len(live), expires
        self._free = []

    def _to_ann(self) -> None:
        """Move to an HNSW index once the partition is big enough for it to pay."""
        assert isinstance(self._store, _Exact) and self.dim is not None
        try:
            ann = _Usearch(self.dim)
            ann.grow(self._cap)
            live = np.array(sorted(self._slot.values()), dtype=np.int64)
            ann.put_many(live, self._store.vectors(live))
        except Exception as exc:  # a broken optional library must not break the cache
            _log.warning("rag-cache: ANN index unavailable, staying exact: %s", exc)
            self.ann_threshold = None
            return
        self._store = ann

    # -- search -------------------------------------------------------------------

    def search(self, q: np.ndarray, k: int, floor: float, now: float) -> list[Candidate]:
        """Up to ``k`` live candidates with cosine >= ``floor``, best first.  Rows found
        expired on the way are removed."""
        with self.lock:
            if not self._slot:
                return []
            slack = ANN_EPSILON if self._store.approximate else 0.0
            want = min(len(self._slot) if self._store.approximate else self._used, 2 * k)
            slots, scores = self._store.search(q, self._used, want)
            out: list[Candidate] = []
            expired: list[str] = []
            for slot, score in zip(slots.tolist(), scores.tolist(), strict=True):
                if score + slack < floor or len(out) == k:
                    break
                key = self._keys[slot] if 0 <= slot < self._used else None
                if key is None:
                    continue
                if self._expires[slot] <= now:
                    expired.append(key)
                    continue
                out.append(Candidate(key, self._questions[slot] or "", float(score)))
            for key in expired:
                self.remove(key)
            return out

    def vector(self, key: str) -> np.ndarray | None:
        with self.lock:
            slot = self._slot.get(key)
            if slot is None:
                return None
            row: np.ndarray = self._store.vectors(np.array([slot]))[0].copy()
            return row

    def keys(self) -> list[str]:
        with self.lock:
            return list(self._slot)

    def stats(self) -> IndexStats:
        with self.lock:
            backend = "usearch" if isinstance(self._store, _Usearch) else "exact"
            return IndexStats(len(self._slot), self._used, backend, self._store.nbytes)

    def info(self) -> dict[str, Any]:
        s = self.stats()
        return {"size": s.size, "slots": s.slots, "backend": s.backend,
                "vector_bytes": s.vector_bytes}
