"""The public names of ``langchain_rag_cache`` are pinned."""

import langchain_rag_cache

EXPECTED = [
    "MARK",
    "CacheAnalyticsHandler",
    "CacheTuningHandler",
    "CacheWarmingHandler",
    "RagCacheHandlers",
    "RagLLMCache",
    "__version__",
    "enable_rag_cache_handlers",
    "is_cached",
]


def test_all_is_pinned() -> None:
    assert langchain_rag_cache.__all__ == EXPECTED
    assert len(set(EXPECTED)) == len(EXPECTED)


def test_every_name_resolves() -> None:
    for name in langchain_rag_cache.__all__:
        assert getattr(langchain_rag_cache, name) is not None
