"""Private parts of ``rag_cache_plugin.analytics`` (import from there)."""
