"""Reuse of the query embedding between the semantic layer and the retriever.

On a miss with semantic matching on, the cache has just embedded the question;
a vector retriever over the same embedding model would embed it again.  When
the semantic layer can hand over that vector, it goes into the ``QueryBundle``
(``VectorIndexRetriever`` skips embedding when ``bundle.embedding`` is set).

The semantic layer opts in by offering ``shared_query_vector(text, embed_model)``:
the raw vector ``embed_model.get_query_embedding(text)`` gave for exactly
``text``, or None when it did not embed that text with that very model.
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import QueryBundle

__all__ = ["prefill_query_embedding"]

_log = logging.getLogger("llama_index_rag_cache")


def prefill_query_embedding(semantic: Any, retriever: Any, bundle: QueryBundle) -> bool:
    """Put the semantic layer's vector of the query into ``bundle`` if it is exactly
    what ``retriever`` would compute; True when it did."""
    if semantic is None or bundle.embedding is not None:
        return False
    if bundle.custom_embedding_strs or bundle.image_path:
        return False  # the retriever would embed other text than the question
    share = getattr(semantic, "shared_query_vector", None)
    model = getattr(retriever, "_embed_model", None)
    if share is None or not isinstance(model, BaseEmbedding):
        return False
    try:
        vector = share(bundle.query_str, model)
    except Exception:
        _log.debug("rag-cache: shared_query_vector failed", exc_info=True)
        return False
    if vector is None:
        return False
    bundle.embedding = [float(x) for x in vector]
    return True
