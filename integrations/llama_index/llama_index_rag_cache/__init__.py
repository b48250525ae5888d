"""LlamaIndex integration of rag-cache-plugin.

``CachedRetriever`` and ``CachedQueryEngine`` keep retrievals and answers in a
``RagCache`` (memory, SQLite, Redis), tagged with the documents they were built
from; ``watch_documents`` invalidates them when those documents change;
``RagCacheEventHandler`` (instrumentation) and ``RagCacheCallbackHandler`` (legacy
callbacks) feed LlamaIndex's query, retrieval, LLM and embedding events to the
cache's analytics, warming and tuning.
"""

from ._callbacks import RagCacheCallbackHandler
from ._documents import DocumentWatch, watch_documents
from ._identity import index_tag
from ._instrumentation import RagCacheEventHandler
from ._query_engine import CachedQueryEngine
from ._retriever import CachedRetriever

__version__ = "0.1.0"

__all__ = [
    "CachedQueryEngine",
    "CachedRetriever",
    "DocumentWatch",
    "RagCacheCallbackHandler",
    "RagCacheEventHandler",
    "__version__",
    "index_tag",
    "watch_documents",
]
