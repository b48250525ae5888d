"""Private parts of :mod:`rag_cache_plugin.redis_ops`: topology, profiles, health, ACL."""
