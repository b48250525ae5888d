"""The eviction benchmark's own machinery: trace loading and Belady's optimum."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import lzma
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_eviction", ROOT / "benchmarks" / "bench_eviction.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_offline(trace: list[int], capacity: int) -> int:
    """Most hits any eviction (with bypass) can get: exhaustive search."""

    @functools.cache
    def go(i: int, cache: frozenset[int]) -> int:
        if i == len(trace):
            return 0
        key = trace[i]
        if key in cache:
            return 1 + go(i + 1, cache)
        best = go(i + 1, cache)  # not kept
        if len(cache) < capacity:
            return max(best, go(i + 1, cache | {key}))
        return max([best, *(go(i + 1, (cache - {out}) | {key}) for out in cache)])

    return go(0, frozenset())


@settings(max_examples=150, deadline=None)
@given(trace=st.lists(st.integers(0, 5), max_size=12), capacity=st.integers(1, 3))
def test_belady_is_optimal(bench: ModuleType, trace: list[int], capacity: int) -> None:
    keys = np.array(trace, dtype=np.int64)
    hits = bench.belady(keys, bench.next_uses(keys), capacity) * len(trace)
    assert round(hits) == best_offline(trace, capacity)


def test_next_uses(bench: ModuleType) -> None:
    keys = np.array([3, 1, 3, 3, 1, 2])
    assert bench.next_uses(keys).tolist() == [2, 4, 3, 6, 6, 6]


def test_load_both_formats(bench: ModuleType, tmp_path: Path) -> None:
    keys = [5, -1, 70_000, 5]
    xz = tmp_path / "a.trace.xz"
    xz.write_bytes(lzma.compress(np.array(keys, dtype=">i4").tobytes()))
    gz = tmp_path / "b.trace.gz"
    gz.write_bytes(gzip.compress("\n".join(map(str, keys)).encode() + b"\n"))
    assert bench.load_trace(xz).tolist() == keys
    assert bench.load_trace(gz).tolist() == keys


def test_data_dir_from_environment(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CACHE_DATA", "/somewhere/data")
    assert bench.default_traces_dir() == Path("/somewhere/data/traces")
    monkeypatch.delenv("RAG_CACHE_DATA")
    assert bench.default_traces_dir() == ROOT.parent / "shared" / "data" / "traces"
