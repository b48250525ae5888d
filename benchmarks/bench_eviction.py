"""Hit ratios of the L1 eviction policies on public cache traces, beside LRU and
Belady's optimum.

    python benchmarks/bench_eviction.py [--traces DIR] [--out DIR]

Traces default to ``../shared/data/traces`` next to the repository, or to
``$RAG_CACHE_DATA/traces``.  cache2k ``*.trace.xz`` files are xz-compressed
big-endian int32 keys; LIRS ``*.trace.gz`` files are gzip text, one key a line.
Writes ``results/eviction.json`` and ``results/eviction.md``.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import lzma
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from rag_cache_plugin._policies import DEFAULT_POLICY, POLICIES, simulate  # noqa: E402

FRACTIONS = (0.01, 0.05, 0.10)
"""Capacities as a share of each trace's unique keys."""
MAX_BELOW_LRU = 0.5  # points: the default may never trail LRU by more than this
MIN_MEAN_GAIN = 5.0  # points: and must beat it by this much on average


def default_traces_dir() -> Path:
    data = os.environ.get("RAG_CACHE_DATA")
    base = Path(data) if data else ROOT.parent / "shared" / "data"
    return base / "traces"


def load_trace(path: Path) -> np.ndarray:
    """Keys of one trace as int64 codes, in access order."""
    if path.name.endswith(".trace.xz"):
        with lzma.open(path) as f:
            return np.frombuffer(f.read(), dtype=">i4").astype(np.int64)
    if path.name.endswith(".trace.gz"):
        with gzip.open(path, "rt") as f:
            words = f.read().split()
        try:
            return np.array(words, dtype=np.int64)
        except ValueError:  # non-numeric keys: code them
            return np.unique(np.array(words), return_inverse=True)[1].astype(np.int64)
    raise ValueError(f"unknown trace format: {path.name}")


def next_uses(keys: np.ndarray) -> np.ndarray:
    """For each access, the index of the next access to the same key (len = never)."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")  # each key's accesses, in time order
    nxt = np.full(n, n, dtype=np.int64)
    same = keys[order[1:]] == keys[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def belady(keys: np.ndarray, nxt: np.ndarray, capacity: int) -> float:
    """Hit ratio of Belady's MIN: evict the key needed furthest in the future.

    The newcomer itself may be that key (it is then not kept), as an admission
    policy may also decline it, so this is the bound for every policy here.
    The heap holds (-next use, key) with stale pairs skipped lazily: O(n log n).
    """
    resident: dict[int, int] = {}
    heap: list[tuple[int, int]] = []
    push, pop = heapq.heappush, heapq.heappop
    hits = 0
    for key, use in zip(keys.tolist(), nxt.tolist(), strict=True):
        if key in resident:
            hits += 1
        resident[key] = use
        push(heap, (-use, key))
        if len(resident) > capacity:
            while True:
                neg, out = pop(heap)
                if resident.get(out) == -neg:
                    del resident[out]
                    break
    return hits / len(keys) if len(keys) else 0.0


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def run(
    traces_dir: Path, policies: Sequence[str], fractions: Sequence[float] = FRACTIONS
) -> dict[str, Any]:
    paths = sorted(p for p in traces_dir.iterdir() if p.name.endswith((".trace.xz", ".trace.gz")))
    if not paths:
        raise SystemExit(f"no traces in {traces_dir} (set RAG_CACHE_DATA or --traces)")
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = dict.fromkeys([*policies, "belady"], 0.0)
    for path in paths:
        keys = load_trace(path)
        name = path.name.split(".trace")[0]
        unique = len(np.unique(keys))
        trace = keys.tolist()  # Python ints: what the policies see in production
        nxt = next_uses(keys)
        for fraction in fractions:
            capacity = max(1, round(unique * fraction))
            row: dict[str, Any] = {
                "trace": name,
                "accesses": len(keys),
                "unique": unique,
                "fraction": fraction,
                "capacity": capacity,
                "hit_ratio": {},
            }
            for policy in policies:
                t0 = time.perf_counter()
                row["hit_ratio"][policy] = simulate(policy, trace, capacity)
                seconds[policy] += time.perf_counter() - t0
            t0 = time.perf_counter()
            row["hit_ratio"]["belady"] = belady(keys, nxt, capacity)
            seconds["belady"] += time.perf_counter() - t0
            rows.append(row)
            print(_row_line(row, policies), flush=True)
    return {"rows": rows, "seconds": seconds}


def summarize(rows: list[dict[str, Any]], policy: str) -> dict[str, Any]:
    """Gain of ``policy`` over LRU and gap to Belady, in percentage points."""
    deltas = [100 * (r["hit_ratio"][policy] - r["hit_ratio"]["lru"]) for r in rows]
    gaps = [100 * (r["hit_ratio"]["belady"] - r["hit_ratio"][policy]) for r in rows]
    worst = min(range(len(rows)), key=deltas.__getitem__)
    return {
        "policy": policy,
        "mean_gain_vs_lru": statistics.fmean(deltas),
        "worst_gain_vs_lru": deltas[worst],
        "worst_case": f"{rows[worst]['trace']} @ {rows[worst]['fraction']:.0%}",
        "mean_gap_to_belady": statistics.fmean(gaps),
        "max_gap_to_belady": max(gaps),
        "meets_targets": deltas[worst] >= -MAX_BELOW_LRU
        and statistics.fmean(deltas) >= MIN_MEAN_GAIN,
    }


def _row_line(row: dict[str, Any], policies: Sequence[str]) -> str:
    ratios = "  ".join(f"{p}={100 * row['hit_ratio'][p]:6.2f}" for p in [*policies, "belady"])
    return f"{row['trace']:>16} {row['fraction']:>4.0%} ({row['capacity']:>5})  {ratios}"


def markdown(result: dict[str, Any]) -> str:
    policies: list[str] = result["policies"]
    default = result["default"]
    cols = [*policies, "belady", f"{default} - lru", f"belady - {default}"]
    lines = [
        "# L1 eviction policies: hit ratio (%)",
        "",
        "Generated by `python benchmarks/bench_eviction.py`.  Capacity is a share of each "
        "trace's unique keys.  Belady may decline a newcomer (as an admission policy can), "
        f"so it bounds every policy.  Default policy: **{default}**.",
        "",
        "| trace | accesses | capacity | " + " | ".join(cols) + " |",
        "|---|---:|---:|" + "---:|" * len(cols),
    ]
    for r in result["rows"]:
        h = {k: 100 * v for k, v in r["hit_ratio"].items()}
        cells = [f"{h[p]:.2f}" for p in [*policies, "belady"]]
        cells += [f"{h[default] - h['lru']:+.2f}", f"{h['belady'] - h[default]:.2f}"]
        lines.append(
            f"| {r['trace']} | {r['accesses']:,} | {r['fraction']:.0%} ({r['capacity']:,}) | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Policies:", ""]
    for p in policies:
        doc = (POLICIES[p].__doc__ or "").strip().split("\n\n")[0]
        lines.append(f"- `{p}`: {' '.join(doc.split())}")
    lines += ["", "Gain over LRU and gap to Belady, percentage points:", ""]
    lines += ["| policy | mean gain | worst gain (where) | mean gap to Belady | max gap |"]
    lines += ["|---|---:|---|---:|---:|"]
    for s in result["summary"]:
        lines.append(
            f"| {s['policy']} | {s['mean_gain_vs_lru']:+.2f} | {s['worst_gain_vs_lru']:+.2f} "
            f"({s['worst_case']}) | {s['mean_gap_to_belady']:.2f} | {s['max_gap_to_belady']:.2f} |"
        )
    m = result["machine"]
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in result["seconds"].items())
    lines += [
        "",
        f"Targets for the default: never more than {MAX_BELOW_LRU} points below LRU, at least "
        f"{MIN_MEAN_GAIN} points above it on average: "
        f"{'met' if result['default_summary']['meets_targets'] else 'NOT met'}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']} "
        f"({m['platform']}).  Replay time: {secs}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--traces", type=Path, default=None, help="directory of traces")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--policies", nargs="*", default=sorted(POLICIES, key=_lru_first))
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="*",
        default=list(FRACTIONS),
        help="capacities as shares of unique keys (the targets are judged on the default)",
    )
    args = parser.parse_args(argv)
    traces_dir = args.traces or default_traces_dir()
    policies = list(args.policies)
    if "lru" not in policies:
        policies.insert(0, "lru")

    started = time.perf_counter()
    result: dict[str, Any] = {"policies": policies, "default": DEFAULT_POLICY}
    result.update(run(traces_dir, policies, args.fractions))
    result["summary"] = [summarize(result["rows"], p) for p in policies if p != "lru"]
    default = DEFAULT_POLICY if DEFAULT_POLICY in policies else policies[-1]
    result["default"] = default
    result["default_summary"] = summarize(result["rows"], default)
    result["machine"] = machine()
    result["total_seconds"] = time.perf_counter() - started

    print()
    for s in result["summary"]:
        print(
            f"{s['policy']:>8}: mean {s['mean_gain_vs_lru']:+.2f} pts vs LRU, worst "
            f"{s['worst_gain_vs_lru']:+.2f} ({s['worst_case']}), mean gap to Belady "
            f"{s['mean_gap_to_belady']:.2f}, targets {'met' if s['meets_targets'] else 'missed'}"
        )
    print(
        f"default {default}: {'meets' if result['default_summary']['meets_targets'] else 'MISSES'}"
        f" the targets; {result['total_seconds']:.0f}s in all"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eviction.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "eviction.md").write_text(markdown(result))
    return 0 if result["default_summary"]["meets_targets"] else 1


def _lru_first(name: str) -> tuple[bool, str]:
    return (name != "lru", name)


if __name__ == "__main__":
    raise SystemExit(main())
