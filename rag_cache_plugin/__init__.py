"""rag-cache-plugin: a three-tier exact and semantic cache for LLM answers and RAG retrievals.

L1 lives in the process, L2 in a local SQLite file, L3 in Redis or a Redis Cluster.
"""

from ._config import CacheConfig, RedisConfig, SemanticConfig
from ._core import CacheHit, RagCache
from ._errors import (
    CodecError,
    ConfigError,
    CorruptEntryError,
    RagCacheError,
    SignatureError,
    TierError,
    TierUnavailableError,
)
from ._events import (
    BreakerChanged,
    CacheEvent,
    CallCompleted,
    ChainBoundary,
    Cleared,
    Corrupt,
    EmbeddingFailed,
    EventBus,
    Evicted,
    Expired,
    FeedbackReported,
    Hit,
    Invalidated,
    Miss,
    QueryObserved,
    RedisAdjusted,
    RedisHealth,
    Rejected,
    Stored,
    TierFailed,
)
from ._keys import canonicalize
from ._verifier import MatchVerifier, Verdict

__version__ = "0.1.0"

__all__ = [
    "BreakerChanged",
    "CacheConfig",
    "CacheEvent",
    "CacheHit",
    "CallCompleted",
    "ChainBoundary",
    "Cleared",
    "CodecError",
    "ConfigError",
    "Corrupt",
    "CorruptEntryError",
    "EmbeddingFailed",
    "EventBus",
    "Evicted",
    "Expired",
    "FeedbackReported",
    "Hit",
    "Invalidated",
    "MatchVerifier",
    "Miss",
    "QueryObserved",
    "RagCache",
    "RagCacheError",
    "RedisAdjusted",
    "RedisConfig",
    "RedisHealth",
    "Rejected",
    "SemanticConfig",
    "SignatureError",
    "Stored",
    "TierError",
    "TierFailed",
    "TierUnavailableError",
    "Verdict",
    "__version__",
    "canonicalize",
]
