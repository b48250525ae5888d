"""The one place the wrappers talk to ``RagCache``.

Every call is guarded: a cache problem (a bad value, an unexpected error) is
logged and turns into a miss or a skipped store, never an exception in the
user's query.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.schema import QueryBundle

from rag_cache_plugin import CacheHit, RagCache

from . import _marks
from ._identity import Identity, index_tag

__all__ = ["Binding"]

_log = logging.getLogger("llama_index_rag_cache")


def _not_cached(exc: Exception) -> None:
    # ValueError: the result is not JSON data (e.g. datetimes in metadata) or the
    # question is too long; expected, so quiet.  Anything else deserves a warning.
    level = logging.INFO if isinstance(exc, ValueError) else logging.WARNING
    _log.log(level, "rag-cache: result not cached: %s", exc, exc_info=level > logging.INFO)


class Binding:
    """A wrapped object's partition in one cache: its context, model string,
    namespace, TTL and the tags every entry of it carries."""

    def __init__(self, cache: RagCache, identity: Identity, op: _marks.Op, *,
                 namespace: str | None, ttl: float | None) -> None:
        if not isinstance(cache, RagCache):
            raise TypeError(f"cache must be a RagCache, not {type(cache).__name__}")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or not ttl > 0):
            raise ValueError("ttl must be a positive number of seconds (or None)")
        self.cache = cache
        self.identity = identity
        self.op: _marks.Op = op
        self.namespace = cache.namespace if namespace is None else namespace
        self.ttl = ttl
        self.scope_tags = [index_tag(i) for i in identity.index_ids]

    def context_for(self, bundle: QueryBundle) -> str:
        """The partition context; custom embedding strings and images change results."""
        if not bundle.custom_embedding_strs and not bundle.image_path:
            return self.identity.context  # the same str object: its hash is cached
        return json.dumps([self.identity.context, bundle.custom_embedding_strs,
                           bundle.image_path], separators=(",", ":"))

    # TODO(single-flight): pass single_flight=True once the core offers it, so
    # concurrent identical misses compute once.
    def lookup(self, bundle: QueryBundle) -> CacheHit | None:
        _marks.clear()
        try:
            return self.cache.lookup(bundle.query_str, context=self.context_for(bundle),
                                     llm_string=self.identity.llm_string,
                                     namespace=self.namespace)
        except Exception:
            _log.warning("rag-cache lookup failed; computing instead", exc_info=True)
            return None

    async def alookup(self, bundle: QueryBundle) -> CacheHit | None:
        _marks.clear()
        try:
            return await self.cache.alookup(bundle.query_str, context=self.context_for(bundle),
                                            llm_string=self.identity.llm_string,
                                            namespace=self.namespace)
        except Exception:
            _log.warning("rag-cache lookup failed; computing instead", exc_info=True)
            return None

    def _tags(self, tags: Sequence[str]) -> list[str]:
        return [*tags, *self.scope_tags]

    def store(self, bundle: QueryBundle, encode: Callable[[], tuple[Any, Sequence[str]]]) -> None:
        """Store what ``encode()`` returns (value, tags); encoding runs under the guard."""
        try:
            value, tags = encode()
            self.cache.store(bundle.query_str, value, context=self.context_for(bundle),
                             llm_string=self.identity.llm_string, namespace=self.namespace,
                             ttl=self.ttl, tags=self._tags(tags))
        except Exception as exc:
            _not_cached(exc)

    async def astore(self, bundle: QueryBundle,
                     encode: Callable[[], tuple[Any, Sequence[str]]]) -> None:
        """Async ``store``."""
        try:
            value, tags = encode()
            await self.cache.astore(bundle.query_str, value, context=self.context_for(bundle),
                                    llm_string=self.identity.llm_string,
                                    namespace=self.namespace, ttl=self.ttl,
                                    tags=self._tags(tags))
        except Exception as exc:
            _not_cached(exc)

    def note(self, bundle: QueryBundle, hit: CacheHit | None) -> None:
        """Tell the event handlers whether this call was served from the cache."""
        _marks.note(_marks.Outcome(
            self.op, bundle.query_str, hit is not None, self.namespace,
            self.context_for(bundle), self.identity.llm_string,
            hit.key if hit else "", hit.tier if hit else "", hit.kind if hit else "",
            hit.score if hit else 0.0))
