"""Hits the core builds slot by slot are ordinary, equal, frozen ``CacheHit``s."""

from __future__ import annotations

import dataclasses

import pytest

from rag_cache_plugin import CacheConfig, CacheHit, RagCache


def test_fast_hits_equal_constructed_hits() -> None:
    with RagCache(CacheConfig()) as c:
        c.store("q", {"a": 1}, context="ctx", llm_string="m", ttl=60)
        hit = c.lookup("q", context="ctx", llm_string="m")
        assert type(hit) is CacheHit
        fields = {f.name: getattr(hit, f.name) for f in dataclasses.fields(CacheHit)}
        assert CacheHit(**fields) == hit
        assert (hit.value, hit.tier, hit.kind, hit.score) == ({"a": 1}, "l1", "exact", 1.0)
        assert hit.namespace == "default" and hit.question == "q"
        assert hit.expires is not None and hit.evidence is None
        with pytest.raises(dataclasses.FrozenInstanceError):
            hit.tier = "l2"  # type: ignore[misc]
