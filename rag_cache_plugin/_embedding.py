"""Embedders: one small protocol and adapters for what users already have.

``as_embedder`` accepts a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``, a
sentence-transformers model, a model path or name, or any callable
``list[str] -> array``.  Frameworks are recognised by duck typing, so this module
imports neither.  Every adapter returns float32 rows of unit length.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder", "as_embedder", "normalize_rows"]

_PROBE = "dimension probe"


@runtime_checkable
class Embedder(Protocol):
    """What the semantic layer needs from an embedding model."""

    model_id: str
    """Names the model: vectors of different models are never compared."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dim), rows L2-normalised."""
        ...

    async def aembed(self, texts: list[str]) -> np.ndarray: ...


def normalize_rows(raw: Any, n: int) -> np.ndarray:
    """Check an embedding result (n rows, finite) and L2-normalise it as float32."""
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim == 1 and n == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
        raise ValueError(f"embedder returned shape {arr.shape} for {n} texts")
    if not np.isfinite(arr).all():
        raise ValueError("embedder returned non-finite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    # A zero vector stays zero (it matches nothing) rather than becoming NaN.
    return np.ascontiguousarray(arr / np.maximum(norms, 1e-12), dtype=np.float32)


class _Adapter:
    """Shared behaviour: lazily known dimension, async through a worker thread."""

    model_id: str

    def __init__(self, model_id: str, dim: int | None = None) -> None:
        self.model_id = model_id
        self._dim = dim

    @property
    def dim(self) -> int:
        if self._dim is None:
            # Only adapters that cannot tell their width probe it, once.
            self._dim = int(self.embed([_PROBE]).shape[1])
        return self._dim

    def _raw(self, texts: list[str]) -> Any:
        raise NotImplementedError

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        out = normalize_rows(self._raw(list(texts)), len(texts))
        if self._dim is None:
            self._dim = int(out.shape[1])
        return out

    async def aembed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"


class CallableEmbedder(_Adapter):
    """Any ``list[str] -> array`` function."""

    def __init__(self, fn: Callable[[list[str]], Any], model_id: str) -> None:
        super().__init__(model_id)
        self._fn = fn

    def _raw(self, texts: list[str]) -> Any:
        return self._fn(texts)


class LangChainEmbedder(_Adapter):
    """A LangChain ``Embeddings`` (``embed_documents`` / ``aembed_documents``)."""

    def __init__(self, obj: Any, model_id: str) -> None:
        super().__init__(model_id)
        self.obj = obj

    def _raw(self, texts: list[str]) -> Any:
        return self.obj.embed_documents(texts)

    async def aembed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return self.embed(texts)
        out = normalize_rows(await self.obj.aembed_documents(list(texts)), len(texts))
        self._dim = self._dim or int(out.shape[1])
        return out


class LlamaIndexEmbedder(_Adapter):
    """A LlamaIndex ``BaseEmbedding`` (``get_text_embedding_batch`` and its async twin)."""

    def __init__(self, obj: Any, model_id: str) -> None:
        super().__init__(model_id)
        self.obj = obj

    def _raw(self, texts: list[str]) -> Any:
        return self.obj.get_text_embedding_batch(texts)

    async def aembed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return self.embed(texts)
        out = normalize_rows(await self.obj.aget_text_embedding_batch(list(texts)), len(texts))
        self._dim = self._dim or int(out.shape[1])
        return out


class SentenceTransformerEmbedder(_Adapter):
    """A sentence-transformers model, or a path/name loaded on first use."""

    def __init__(self, model: Any, model_id: str, *, batch_size: int = 64) -> None:
        super().__init__(model_id, None if isinstance(model, str) else _st_dim(model))
        self._model = model
        self._batch = batch_size
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        if isinstance(self._model, str):
            with self._lock:
                if isinstance(self._model, str):
                    # Import late: the core must import without torch installed.
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(self._model, device="cpu")
                    self._dim = _st_dim(self._model)
        return self._model

    @property
    def dim(self) -> int:
        self.model  # noqa: B018 - loading sets the width
        return super().dim

    def _raw(self, texts: list[str]) -> Any:
        return self.model.encode(texts, batch_size=self._batch, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)


def _st_dim(model: Any) -> int | None:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        fn = getattr(model, name, None)
        if callable(fn):
            try:
                d = fn()
            except Exception:
                continue
            if isinstance(d, int) and d > 0:
                return d
    return None


def _is_st_model(obj: Any) -> bool:
    return callable(getattr(obj, "encode", None)) and (
        hasattr(obj, "get_embedding_dimension") or hasattr(obj, "get_sentence_embedding_dimension"))


_HEADING = re.compile(r"^#\s+(\S[^\n]*)$", re.MULTILINE)
_GENERIC_DIRS = {"model", "models", "snapshot", "snapshots", "main", "weights"}


def _name_from_path(path: str | os.PathLike[str]) -> str:
    """A model's name from its directory: the model card's title, else the folder name."""
    p = Path(path)
    readme = p / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")[:20_000]
    except OSError:
        text = ""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4:] if end >= 0 else text
    m = _HEADING.search(text)
    if m:
        return m.group(1).strip()
    parts = [x for x in p.resolve().parts if x.casefold() not in _GENERIC_DIRS]
    return parts[-1] if parts else str(p)


def _st_name(model: Any) -> str | None:
    card = getattr(model, "model_card_data", None)
    for attr in ("model_id", "base_model"):
        value = getattr(card, attr, None)
        if isinstance(value, str) and value:
            return value
    try:
        path = model[0].auto_model.config._name_or_path
    except Exception:
        path = getattr(model, "name_or_path", None)
    if isinstance(path, str) and path:
        return _name_from_path(path) if os.path.isdir(path) else path
    return None


def _attr_name(obj: Any, attrs: Sequence[str]) -> str | None:
    for attr in attrs:
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value and value.casefold() != "unknown":
            return value
    return None


def _class_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


DEFAULT_EMBEDDER_NAMES = frozenset({"default", "rag-cache/all-MiniLM-L6-v2-qe2"})
"""Names of the shipped default embedder: all-MiniLM-L6-v2 adapted to question
equivalence (``AdaptedMiniLM``), which the strict verifier is calibrated for."""


def as_embedder(obj: Any, *, model_id: str | None = None) -> Embedder:
    """Adapt ``obj`` to ``Embedder``.  ``model_id`` overrides the derived name (the
    model's name where the object tells it, else its class)."""
    if isinstance(obj, _Adapter):
        if model_id is None or model_id == obj.model_id:
            return obj
        clone = copy.copy(obj)  # never rename the caller's object
        clone.model_id = model_id
        return clone
    if (not isinstance(obj, str | os.PathLike) and _has(obj, "embed", "aembed")
            and isinstance(getattr(obj, "model_id", None), str)):
        if model_id is None or model_id == obj.model_id:
            return obj  # type: ignore[no-any-return]  # already an Embedder
        return _Renamed(obj, model_id)
    if _has(obj, "embed_documents", "embed_query"):
        name = model_id or _attr_name(obj, ("model", "model_name", "model_id", "deployment"))
        return LangChainEmbedder(obj, name or _class_name(obj))
    if _has(obj, "get_text_embedding_batch"):
        name = model_id or _attr_name(obj, ("model_name", "model"))
        return LlamaIndexEmbedder(obj, name or _class_name(obj))
    if _is_st_model(obj):
        return SentenceTransformerEmbedder(obj, model_id or _st_name(obj) or _class_name(obj))
    if isinstance(obj, str) and obj in DEFAULT_EMBEDDER_NAMES:
        from ._embedders import AdaptedMiniLM  # the shipped default, loaded on demand

        adapted = AdaptedMiniLM()
        return adapted if model_id is None else _Renamed(adapted, model_id)
    if isinstance(obj, str | os.PathLike):
        text = os.fspath(obj)
        name = model_id or (_name_from_path(text) if os.path.isdir(text) else text)
        return SentenceTransformerEmbedder(text, name)
    if callable(obj):
        name = model_id or getattr(obj, "model_id", None)
        if not isinstance(name, str) or not name:
            name = _class_name(obj) if not hasattr(obj, "__qualname__") else (
                f"{getattr(obj, '__module__', '')}.{obj.__qualname__}")
        return CallableEmbedder(obj, name)
    raise TypeError(f"cannot use {type(obj).__name__} as an embedder: pass a LangChain "
                    "Embeddings, a LlamaIndex BaseEmbedding, a sentence-transformers model, "
                    "a model path or a callable list[str] -> array")


class _Renamed:
    """An ``Embedder`` under another ``model_id``."""

    def __init__(self, inner: Any, model_id: str) -> None:
        self.inner = inner
        self.model_id = model_id

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed(self, texts: list[str]) -> np.ndarray:
        return normalize_rows(self.inner.embed(texts), len(texts))

    async def aembed(self, texts: list[str]) -> np.ndarray:
        return normalize_rows(await self.inner.aembed(texts), len(texts))


def _has(obj: Any, *names: str) -> bool:
    return all(callable(getattr(obj, n, None)) for n in names)
