"""The public namespace of ``llama_index_rag_cache`` is curated and pinned."""

from __future__ import annotations

import llama_index_rag_cache


def test_all_is_pinned() -> None:
    assert llama_index_rag_cache.__all__ == [
        "CachedQueryEngine",
        "CachedRetriever",
        "DocumentWatch",
        "RagCacheCallbackHandler",
        "RagCacheEventHandler",
        "__version__",
        "index_tag",
        "watch_documents",
    ]
    assert llama_index_rag_cache.__all__ == sorted(llama_index_rag_cache.__all__)
    for name in llama_index_rag_cache.__all__:
        assert hasattr(llama_index_rag_cache, name), name


def test_public_objects_live_in_private_modules() -> None:
    for name in llama_index_rag_cache.__all__:
        obj = getattr(llama_index_rag_cache, name)
        if not callable(obj):
            continue
        module = obj.__module__
        assert module.startswith("llama_index_rag_cache._"), (name, module)
