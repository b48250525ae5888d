"""LangChain integration of rag-cache-plugin.

``set_llm_cache(RagLLMCache(...))`` caches every model call in three tiers (memory,
SQLite, Redis) with exact and semantic matching; the callback handlers feed the
analytics, warming and tuning engines.
"""

from ._cache import RagLLMCache
from ._generations import MARK
from ._handlers import CacheAnalyticsHandler, CacheTuningHandler, CacheWarmingHandler, is_cached
from ._hooks import RagCacheHandlers, enable_rag_cache_handlers

__version__ = "0.1.0"

__all__ = [
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
