"""The curated public namespace (as httpx pins its own)."""

from __future__ import annotations

import rag_cache_plugin


def test_exports_are_pinned_and_sorted() -> None:
    assert rag_cache_plugin.__all__ == [
        "BreakerChanged", "CacheConfig", "CacheEvent", "CacheHit", "CallCompleted",
        "ChainBoundary", "Cleared", "CodecError", "ConfigError", "Corrupt", "CorruptEntryError",
        "EmbeddingFailed", "EventBus", "Evicted", "Expired", "FeedbackReported", "Hit",
        "Invalidated", "MatchVerifier", "Miss", "QueryObserved", "RagCache", "RagCacheError",
        "RedisAdjusted", "RedisConfig", "RedisHealth", "Rejected", "SemanticConfig",
        "SignatureError", "Stored", "TierError", "TierFailed", "TierUnavailableError",
        "Verdict", "__version__", "canonicalize",
    ]
    assert rag_cache_plugin.__all__ == sorted(rag_cache_plugin.__all__)
    for name in rag_cache_plugin.__all__:
        assert hasattr(rag_cache_plugin, name), name


def test_private_modules_stay_private() -> None:
    public_modules = {"analytics", "cli", "redis_ops", "tuning", "warming"}
    import pkgutil

    for info in pkgutil.iter_modules(rag_cache_plugin.__path__):
        assert info.name.startswith("_") or info.name in public_modules, info.name


def test_exception_tree() -> None:
    from rag_cache_plugin import (
        CodecError,
        ConfigError,
        CorruptEntryError,
        RagCacheError,
        SignatureError,
        TierError,
        TierUnavailableError,
    )

    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, RagCacheError)
    assert issubclass(CorruptEntryError, CodecError) and issubclass(SignatureError, CodecError)
    assert issubclass(TierUnavailableError, TierError) and issubclass(CodecError, RagCacheError)
