"""Run every benchmark and write ``results/SUMMARY.md``: one row per target, each figure
a ratio against the baseline measured in the same run, plus the machine and its load.

    python benchmarks/run_all.py [--only latency eviction ...] [--summary-only]

Each benchmark runs in its own process (clean state) and writes its own
``results/<name>.json`` and ``.md``; this script only reads those back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from _common import machine  # noqa: E402

# name -> (script and arguments, timeout in seconds)
BENCHES: dict[str, tuple[list[str], int]] = {
    "latency": (["bench_latency.py"], 1800),
    "eviction": (["bench_eviction.py"], 1800),
    "semantic": (["bench_semantic.py"], 7200),
    "semantic_latency": (["bench_semantic_latency.py"], 7200),
    "analytics_overhead": (["bench_analytics_overhead.py"], 1800),
    "cluster": (["bench_cluster.py"], 1800),
}

Row = tuple[str, str, str, bool]  # measure, figure, target, met


def _latency(d: dict[str, Any]) -> list[Row]:
    r = d["results"]
    return [
        ("core L1 hit vs LangChain InMemoryCache", f"{r['l1_hit_ratio']:.2f}x slower",
         "<= 10x", r["l1_hit_ratio"] <= 10),
        ("RagLLMCache L1 hit, serialized chat prompt, vs InMemoryCache",
         f"{r['adapter_l1_ratio']:.2f}x slower", "<= 10x", r["adapter_l1_ratio"] <= 10),
        ("core L2 hit vs langchain_community SQLiteCache",
         f"{r['l2_hit_speedup']:.1f}x faster",
         ">= 10x", r["l2_hit_speedup"] >= 10),
        ("core L2 store vs SQLiteCache", f"{r['l2_store_speedup']:.1f}x faster", ">= 20x",
         r["l2_store_speedup"] >= 20),
        ("core L3 hit vs bare redis-py GET of the same payload",
         f"{r['l3_vs_bare_get']:.2f}x",
         "<= 1.3x", r["l3_vs_bare_get"] <= 1.3),
        ("core L3 hit vs langchain_community RedisCache",
         f"{r['l3_speedup_vs_rediscache']:.2f}x faster", ">= 1.5x",
         r["l3_speedup_vs_rediscache"] >= 1.5),
        ("chat prompt: RagLLMCache L2 hit vs SQLiteCache",
         f"{r['chat_l2_hit_speedup']:.1f}x faster", ">= 10x", r["chat_l2_hit_speedup"] >= 10),
        ("chat prompt: RagLLMCache L2 store (after the lookup that missed) vs SQLiteCache",
         f"{r['chat_l2_store_speedup']:.1f}x faster", ">= 20x",
         r["chat_l2_store_speedup"] >= 20),
        ("chat prompt: RagLLMCache L3 hit vs RedisCache",
         f"{r['chat_l3_speedup_vs_rediscache']:.2f}x faster", ">= 1.5x",
         r["chat_l3_speedup_vs_rediscache"] >= 1.5),
    ]


def _eviction(d: dict[str, Any]) -> list[Row]:
    s = d["default_summary"]
    return [
        (f"default L1 policy ({s['policy']}) vs LRU, worst trace and capacity",
         f"{s['worst_gain_vs_lru']:+.2f} points", ">= -0.5", s["worst_gain_vs_lru"] >= -0.5),
        (f"default L1 policy ({s['policy']}) vs LRU, mean over traces and capacities",
         f"{s['mean_gain_vs_lru']:+.2f} points (Belady gap {s['mean_gap_to_belady']:.1f})",
         ">= +5", s["mean_gain_vs_lru"] >= 5),
    ]


def _semantic(d: dict[str, Any]) -> list[Row]:
    strict = d["adapted_verifier"]["strict"]
    balanced = d["adapted_verifier"]["balanced"]
    return [
        ("semantic default (strict): false-hit rate, held-out Quora pairs",
         f"{100 * strict['fpr']:.2f}%", "<= 1%", strict["fpr"] <= 0.01),
        ("semantic default (strict): true-hit rate vs plain cosine at the same false-hit rate",
         f"{strict['ratio']:.2f}x ({strict['tpr']:.3f} vs "
         f"{strict['plain_cosine_tpr_same_fpr']:.3f})", ">= 1.3x", strict["ratio"] >= 1.3),
        ("semantic balanced: true-hit rate vs plain cosine at the same false-hit rate",
         f"{balanced['ratio']:.2f}x at {100 * balanced['fpr']:.1f}% false hits", "(report)",
         True),
    ]


def _semantic_latency(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for n, limit in ((100_000, 2.0), (1_000_000, 20.0)):
        runs = [s for s in d.get("scale", []) if s["n"] == n]
        if not runs:
            rows.append((f"semantic search + verify, {n:,} questions, median", "not measured",
                         f"<= {limit:g} ms", False))
            continue
        # The configuration that ships (the ANN index above its threshold), else exact.
        best = next((s for s in runs if "shipped" in s["backend"]), None) or \
            min(runs, key=lambda s: s["median_ms"])
        rows.append((f"semantic search + verify, {n:,} questions, median ({best['backend']})",
                     f"{best['median_ms']:.2f} ms", f"<= {limit:g} ms",
                     best["median_ms"] <= limit))
    whole = d.get("whole")
    if whole:
        ratio = whole["ours"]["median_ms"] / whole["gptcache"]["median_ms"]
        rows.append(("whole semantic hit incl. MiniLM embedding vs GPTCache get",
                     f"{ratio:.2f}x the time", "< 1x", ratio < 1))
    return rows


def _analytics(d: dict[str, Any]) -> list[Row]:
    ratio = d["ratio_on_off_median_of_rounds"]
    return [("L1 hit with analytics on vs off", f"{ratio:.2f}x", "<= 1.5x", ratio <= 1.5)]


def _cluster(d: dict[str, Any]) -> list[Row]:
    best = max(c["per_s"] for c in d["concurrent"])
    seq = d["sequential"]["slowdown"]
    return [
        ("L3 concurrent async lookups, local 3-primary cluster",
         f"{best:,.0f}/s (redis-benchmark P1: {d['redis_benchmark']['get_P1']:,.0f}/s)",
         ">= 50,000/s", best >= 50_000),
        ("L3 sequential lookup vs bare redis-py GET (cluster)", f"{seq:.2f}x", "<= 1.3x",
         seq <= 1.3),
    ]


EXTRACT: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "latency": _latency, "eviction": _eviction, "semantic": _semantic,
    "semantic_latency": _semantic_latency, "analytics_overhead": _analytics,
    "cluster": _cluster,
}


def run(name: str) -> bool:
    args, timeout = BENCHES[name]
    print(f"== {name}", flush=True)
    started = time.time()
    try:
        done = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], cwd=HERE.parent,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {timeout}s", flush=True)
        return False
    print(f"== {name}: exit {done.returncode} in {time.time() - started:.0f}s", flush=True)
    return done.returncode == 0


def summary() -> str:
    rows: list[str] = ["| benchmark | measure | figure | target | met |", "|---|---|---|---|---|"]
    details: list[str] = []
    for name, extract in EXTRACT.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            rows.append(f"| {name} | (not run) | | | |")
            continue
        for measure, figure, target, met in extract(json.loads(path.read_text())):
            rows.append(f"| {name} | {measure} | {figure} | {target} | "
                        f"{'yes' if met else '**no**'} |")
        if (RESULTS / f"{name}.md").exists():
            details.append(f"- [{name}]({name}.md)")
    m = machine()
    load = os.getloadavg()
    return ("# Benchmark summary\n\n" + "\n".join(rows) + "\n\n"
            f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['system']}; "
            f"load average {load[0]:.1f} when this summary was written.\n\n"
            "Details:\n\n" + "\n".join(details) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHES))
    ap.add_argument("--summary-only", action="store_true", help="only rebuild SUMMARY.md")
    args = ap.parse_args()
    ok = True
    if not args.summary_only:
        for name in args.only or BENCHES:
            ok = run(name) and ok
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "SUMMARY.md").write_text(summary())
    from update_readme import main as update_readme

    update_readme()
    print((RESULTS / "SUMMARY.md").read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
