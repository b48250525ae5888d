"""The adapter latency benchmark runs (its figures are not asserted: timing on a
shared machine is not a test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def test_adapter_latency_benchmark_runs() -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_adapter_latency", ROOT / "benchmarks" / "bench_adapter_latency.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(run_seconds=0.0001, repeat=3, write=False)
    assert result["rag_llm_cache_us"] > 0 and result["in_memory_cache_us"] > 0
    assert abs(result["ratio"] - result["rag_llm_cache_us"] / result["in_memory_cache_us"]) < 0.1
    assert result["cpu_ratio"] > 0
    assert result["prompt_chars"] > 1000
