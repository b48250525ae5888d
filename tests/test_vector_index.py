"""SemanticIndex on random unit vectors: search, O(1) removal with slot reuse,
compaction, expiry, and the usearch backend agreeing with exact search."""

from __future__ import annotations

import numpy as np
import pytest

from rag_cache_plugin._semantic_store import pack, unpack
from rag_cache_plugin._vector_index import SemanticIndex, usearch_available


def unit(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_remove_reuse_and_compact() -> None:
    v = unit(3000)
    idx = SemanticIndex(ann_threshold=None)
    for i in range(3000):
        idx.add(f"k{i}", f"q{i}", v[i], None)
    assert [c.key for c in idx.search(v[42], 3, 0.5, 0.0)] == ["k42"]
    assert idx.remove("k42") and not idx.remove("k42")
    assert idx.search(v[42], 3, 0.5, 0.0) == []
    idx.add("new", "q", v[42], None)  # reuses the freed slot
    assert idx.stats().slots == 3000
    for i in range(2900):
        idx.remove(f"k{i}")
    assert idx.stats().slots < 1000  # compacted
    assert [c.key for c in idx.search(v[2950], 1, 0.5, 0.0)] == ["k2950"]
    assert len(idx) == 101


def test_expired_rows_are_skipped_and_reaped() -> None:
    v = unit(10)
    idx = SemanticIndex(ann_threshold=None)
    idx.add("old", "q", v[0], expires=10.0)
    idx.add("new", "q", v[1], expires=100.0)
    assert idx.search(v[0], 2, 0.5, now=11.0) == [] and "old" not in idx
    assert idx.reap(now=101.0) == ["new"] and len(idx) == 0


@pytest.mark.skipif(not usearch_available(), reason="usearch (the ann extra) is not installed")
def test_usearch_agrees_with_exact() -> None:
    v = unit(2000, 384)
    exact, ann = SemanticIndex(ann_threshold=None), SemanticIndex(ann_threshold=500)
    exact.add_many([(f"k{i}", "q", v[i], None) for i in range(2000)])
    ann.add_many([(f"k{i}", "q", v[i], None) for i in range(2000)])
    assert ann.stats().backend == "usearch" and exact.stats().backend == "exact"
    noisy = v[:50] + 0.05 * unit(50, 384, seed=1)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    agree = sum(exact.search(q, 1, 0.0, 0)[0].key == ann.search(q, 1, 0.0, 0)[0].key
                for q in noisy)
    assert agree >= 48
    ann.remove("k3")
    assert all(c.key != "k3" for c in ann.search(v[3], 4, 0.0, 0))


def test_vector_record_round_trip() -> None:
    vec = unit(1, 8)[0].tobytes()
    assert unpack(pack("héllo?", vec, None)) == ("héllo?", vec, None)
    assert unpack(pack("q", vec, 12.5)) == ("q", vec, 12.5)
    with pytest.raises(ValueError):
        unpack(b"\x00")


def test_ann_search_widens_as_the_index_grows() -> None:
    """HNSW recall falls as the graph grows; the search breadth grows with it, bounded
    so a million-question partition still searches in a few milliseconds."""
    from rag_cache_plugin._vector_index import _search_breadth

    sizes = [1, 100_000, 200_000, 300_000, 1_000_000, 50_000_000]
    breadths = [_search_breadth(n) for n in sizes]
    assert breadths == sorted(breadths)
    assert breadths[0] == breadths[1] == 128 and breadths[-1] == 384
