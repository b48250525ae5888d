"""``CachedRetriever``: any retriever, with its results in the three tiers."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_cache_plugin import CacheHit, RagCache

from ._binding import Binding
from ._identity import identify
from ._reuse import prefill_query_embedding
from ._serde import PayloadError, decode_nodes, encode_nodes, source_tags

__all__ = ["CachedRetriever"]


class CachedRetriever(BaseRetriever):
    """Wraps ``retriever``; a repeated (or, with semantic matching, paraphrased)
    query returns the cached nodes without calling it.

    Entries are shared by every process using the same ``cache_id`` (derived from
    the retriever's class, index id and settings when not given: give the index a
    stable id with ``index.set_index_id(...)`` so other processes derive the same
    one).  Each entry is tagged with the ``ref_doc_id`` and id of every node in it,
    so ``cache.invalidate(tags=[doc_id])`` drops exactly the results built from
    that document.
    """

    def __init__(self, retriever: BaseRetriever, cache: RagCache, *,
                 cache_id: str | None = None, namespace: str | None = None,
                 ttl: float | None = None,
                 callback_manager: CallbackManager | None = None) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise TypeError(f"retriever must be a BaseRetriever, not {type(retriever).__name__}")
        self._retriever = retriever
        self._binding = Binding(cache, identify(retriever, "retrieval", cache_id), "retrieval",
                                namespace=namespace, ttl=ttl)
        super().__init__(callback_manager=callback_manager or retriever.callback_manager)

    @property
    def retriever(self) -> BaseRetriever:
        """The wrapped retriever."""
        return self._retriever

    @property
    def cache(self) -> RagCache:
        return self._binding.cache

    @property
    def cache_id(self) -> str:
        """The identity whose entries this wrapper shares with other processes."""
        return self._binding.identity.cache_id

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {"retriever": self._retriever}

    def _from_hit(self, bundle: QueryBundle, hit: CacheHit | None) -> list[NodeWithScore] | None:
        if hit is None:
            return None
        try:
            nodes = decode_nodes(hit.value)
        except PayloadError:
            return None  # not ours or from another version: recompute and overwrite
        self._binding.note(bundle, hit)
        return nodes

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        b = self._binding
        nodes = self._from_hit(query_bundle, b.lookup(query_bundle))
        if nodes is not None:
            return nodes
        prefill_query_embedding(b.cache.semantic, self._retriever, query_bundle)
        nodes = self._retriever.retrieve(query_bundle)
        b.store(query_bundle, lambda: (encode_nodes(nodes), source_tags(nodes)))
        b.note(query_bundle, None)
        return nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        b = self._binding
        nodes = self._from_hit(query_bundle, await b.alookup(query_bundle))
        if nodes is not None:
            return nodes
        prefill_query_embedding(b.cache.semantic, self._retriever, query_bundle)
        nodes = await self._retriever.aretrieve(query_bundle)
        await b.astore(query_bundle, lambda: (encode_nodes(nodes), source_tags(nodes)))
        b.note(query_bundle, None)
        return nodes
