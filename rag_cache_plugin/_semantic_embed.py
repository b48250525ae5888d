"""The embedding side of the semantic layer: a bounded memo so the same canonical
question is never embedded twice, and failures that become misses plus an event."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from time import perf_counter
from typing import TYPE_CHECKING

import numpy as np

from ._events import EmbeddingFailed, Rejected

if TYPE_CHECKING:
    from ._config import SemanticConfig
    from ._core import RagCache
    from ._embedding import Embedder

__all__ = ["EmbeddingMemo", "EmbeddingSide"]

_log = logging.getLogger("rag_cache_plugin")


class EmbeddingMemo:
    """Bounded LRU of canonical question -> unit vector (read-only float32 rows)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            vec = self._data.get(text)
            if vec is not None:
                self._data.move_to_end(text)
            return vec

    def put(self, text: str, vec: np.ndarray) -> None:
        if self.max_entries <= 0:
            return
        row = np.array(vec, dtype=np.float32)  # a private copy, frozen
        row.setflags(write=False)
        with self._lock:
            self._data[text] = row
            self._data.move_to_end(text)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def put_many(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        for text, vec in items:
            self.put(text, vec)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class EmbeddingSide:
    """Embedding with memo and failure handling (mixed into ``SemanticMatcher``)."""

    cache: RagCache
    config: SemanticConfig
    embedder: Embedder
    memo: EmbeddingMemo
    dim: int | None

    def _too_long(self, canonical: str, namespace: str) -> bool:
        if len(canonical) <= self.config.max_embed_chars:
            return False
        self.cache._emit_if_active(Rejected(namespace, "", "question too long to embed",
                                            len(canonical)))
        return True

    def _accept(self, texts: list[str], out: np.ndarray) -> None:
        if self.dim is None:
            self.dim = int(out.shape[1])
        elif out.shape[1] != self.dim:
            raise ValueError(f"embedder returned {out.shape[1]} dimensions, not {self.dim}")
        self.memo.put_many(zip(texts, out, strict=True))

    def _embed_failed(self, namespace: str, exc: BaseException, started: float, n: int) -> None:
        _log.warning("rag-cache: embedding failed: %s", exc)
        self.cache._emit_if_active(EmbeddingFailed(
            namespace, "", f"{type(exc).__name__}: {exc}", perf_counter() - started, n))

    def embed_many(self, texts: list[str], namespace: str) -> list[np.ndarray | None]:
        """Vectors of canonical texts, memoised; None where embedding failed."""
        out: list[np.ndarray | None] = [self.memo.get(t) for t in texts]
        todo = sorted({t for t, v in zip(texts, out, strict=True) if v is None})
        if todo:
            started = perf_counter()
            try:
                fresh = self.embedder.embed(todo)
                self._accept(todo, fresh)
            except Exception as exc:  # never into the caller's chain
                self._embed_failed(namespace, exc, started, len(todo))
                return out
            got = dict(zip(todo, fresh, strict=True))
            out = [v if v is not None else got[t] for t, v in zip(texts, out, strict=True)]
        return out

    async def aembed_one(self, canonical: str, namespace: str) -> np.ndarray | None:
        vec = self.memo.get(canonical)
        if vec is None:
            started = perf_counter()
            try:
                fresh = await self.embedder.aembed([canonical])
                self._accept([canonical], fresh)
            except Exception as exc:
                self._embed_failed(namespace, exc, started, 1)
                return None
            vec = fresh[0]
        return vec

    def vector_for(self, canonical: str, namespace: str) -> bytes | None:
        if self._too_long(canonical, namespace):
            return None
        vec = self.embed_many([canonical], namespace)[0]
        return None if vec is None else np.asarray(vec, dtype="<f4").tobytes()

    async def avector_for(self, canonical: str, namespace: str) -> bytes | None:
        if self._too_long(canonical, namespace):
            return None
        vec = await self.aembed_one(canonical, namespace)
        return None if vec is None else np.asarray(vec, dtype="<f4").tobytes()

    def learn_dim(self, namespace: str) -> bool:
        """Make sure the embedder's width is known (may embed a probe text once)."""
        if self.dim is None:
            started = perf_counter()
            try:
                self.dim = int(self.embedder.dim)
            except Exception as exc:
                self._embed_failed(namespace, exc, started, 1)
        return self.dim is not None

    def as_vector(self, raw: bytes | None) -> np.ndarray | None:
        """A stored vector as a float32 row, or None if it does not fit this model."""
        if raw is None or self.dim is None or len(raw) != self.dim * 4:
            return None
        return np.frombuffer(raw, dtype="<f4")
