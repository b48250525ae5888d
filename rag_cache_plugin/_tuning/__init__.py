"""The auto-tuner's private modules; the public names live in ``rag_cache_plugin.tuning``."""
