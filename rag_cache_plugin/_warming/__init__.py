"""Cache warming internals; the public face is ``rag_cache_plugin.warming``."""
