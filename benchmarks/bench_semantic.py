"""Semantic matching on the QQP pairs: plain cosine vs the adapted embedder + verifier.

    python benchmarks/bench_semantic.py            # all 48,700 pairs, 3 grouped folds
    python benchmarks/bench_semantic.py --quick    # 2 folds of a 12,000-pair subsample

Nothing is scored on pairs it was fitted on.  Pairs are split into 3 folds grouped by
connected question (no question text is on both sides of a split).  The adapted
embedder (LoRA adapters on every linear layer of all-MiniLM-L6-v2, benchmarks/_tune.py)
is fine-tuned per fold on the other two folds, so every pair's adapted cosine comes from
a model that never saw it (fit_verifier.py ships fold 0's adapters, so the shipped
model is one of the three measured here).  The verifier -- its score and the
thresholds of each setting -- is fitted per test fold on the other folds' pairs only
(thresholds from an inner cross-validation there), then applied to the test fold;
FPR/TPR of a setting are pooled over the test folds.  Plain cosine at the same FPR is
the reference ("ratio").

Full run on this 2-core machine: a fold's fine-tuning (one epoch over ~32,500 pairs)
takes ~16 min with two threads, or ~25-30 min each for two folds side by side with one
thread each (``--fold K --threads 1`` in two shells); results are cached in .work/
(shared with fit_verifier.py), the plain embeddings take ~10 min once, and the
evaluation then takes under a minute.  --quick fine-tunes on two 6,000-pair subsamples
(~7 min).  Writes benchmarks/results/semantic.json and semantic.md (quick:
semantic_quick.*).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _tune
from benchmarks._qqp import (
    FOLDS,
    ROOT,
    Pairs,
    grouped_folds,
    load_base_model,
    load_pairs,
    plain_embeddings,
)
from rag_cache_plugin._keys import canonicalize
from rag_cache_plugin._verifier import MatchVerifier, calibrate, lexical_design

RESULTS = ROOT / "benchmarks" / "results"
LOOK_ALIKES = [
    ("What is the capital of France?", "What is the population of France?"),
    ("What is the capital of France?", "What is the capital of Spain?"),
    ("What is the capital of France?", "What's the capital city of France?"),
    ("Cheap flights to Paris", "Cheap flights from Paris"),
    ("How can I increase my credit score?", "How can I decrease my credit score?"),
    ("What were the best smartphones of 2019?", "What were the best smartphones of 2020?"),
    ("Why is Python fast?", "Why isn't Python fast?"),
    ("How do I lose weight quickly?", "How can I lose weight fast?"),
]


def tpr_at(score: np.ndarray, y: np.ndarray, fpr: float) -> float:
    """TPR at the loosest threshold whose FPR is at most ``fpr``."""
    neg = np.sort(score[y == 0])[::-1]
    k = int(np.floor(fpr * len(neg)))
    t = neg[k] if k < len(neg) else -np.inf
    return float((score[y == 1] > t).mean())


def rates(match: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return float(match[y == 0].mean()), float(match[y == 1].mean())


def evaluate(
    name: str,
    cos: np.ndarray,
    lex: tuple[np.ndarray, np.ndarray],
    y: np.ndarray,
    fold: np.ndarray,
    group: np.ndarray,
    plain: np.ndarray,
) -> dict:  # type: ignore[type-arg]
    """Nested CV of the verifier over out-of-fold cosines."""
    L, G = lex
    score = np.zeros(len(y))
    match = {"strict": np.zeros(len(y), bool), "balanced": np.zeros(len(y), bool)}
    from rag_cache_plugin._verifier import GUARDS, _decision, feature_matrix

    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        inner = fold[tr] if len(np.unique(fold[tr])) > 1 else None  # else calibrate splits
        cal = calibrate(
            [],
            [],
            y[tr],
            cos[tr],
            group=group[tr],
            fold=inner,
            model_id=name,
            lexical=(L[tr], G[tr]),
        )
        gcols = np.array([GUARDS.index(g) for g in cal["guards"]], dtype=int)
        X = feature_matrix(cal, cos[te], L[te])
        score[te] = _decision(X, G[te], np.asarray(cal["weights"]), float(cal["bias"]), gcols)
        for s in match:
            v = MatchVerifier(cal, setting=s)
            match[s][te] = (score[te] >= v.threshold) & (cos[te] >= v.candidate_floor)
    out: dict = {"tpr_at_1pct": tpr_at(score, y, 0.01), "tpr_at_5pct": tpr_at(score, y, 0.05)}  # type: ignore[type-arg]
    for s, m in match.items():
        fpr, tpr = rates(m, y)
        ref = tpr_at(plain, y, fpr)
        out[s] = {
            "fpr": fpr,
            "tpr": tpr,
            "plain_cosine_tpr_same_fpr": ref,
            "ratio": tpr / ref if ref else None,
        }
    return out


def latency(verifier: MatchVerifier, a_txt: list[str], b_txt: list[str], cos: np.ndarray) -> dict:  # type: ignore[type-arg]
    """Per-candidate verify() time: the query's parse is memoised across its candidates,
    as in a lookup; cold = both texts parsed for the first time."""
    from rag_cache_plugin import _lexical

    n = min(3000, len(cos))
    _lexical.parse.cache_clear()
    t = time.perf_counter()
    for i in range(n):
        verifier.verify(b_txt[i], a_txt[i], float(cos[i]))
    cold = (time.perf_counter() - t) / n
    samples = []
    for _ in range(5):
        t = time.perf_counter()
        for i in range(n):
            verifier.verify(b_txt[i], a_txt[i], float(cos[i]))
        samples.append((time.perf_counter() - t) / n)
    return {"verify_us_cold": cold * 1e6, "verify_us_warm": statistics.median(samples) * 1e6}


def embed_latency(model, texts: list[str]) -> float:  # type: ignore[no-untyped-def]
    for t in texts[:5]:
        model.embed([t]) if hasattr(model, "embed") else model.encode([t])
    samples = []
    for t in texts[:200]:
        s = time.perf_counter()
        model.embed([t]) if hasattr(model, "embed") else model.encode(
            [t], normalize_embeddings=True
        )
        samples.append(time.perf_counter() - s)
    return statistics.median(samples) * 1e3


def gptcache_demo(base) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    """GPTCache 0.1.44 with its quick-start similarity setup (SearchDistanceEvaluation,
    similarity_threshold 0.8, sqlite + a vector store), embedding with plain MiniLM
    (its default ONNX model is not available offline)."""
    import tempfile

    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    out = []
    for cached, query in LOOK_ALIKES:
        d = tempfile.mkdtemp()
        cache = Cache()
        cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=lambda x, **_: base.encode([x], normalize_embeddings=True)[0],
            data_manager=get_data_manager(
                CacheBase("sqlite", sql_url=f"sqlite:///{d}/c.db"),
                VectorBase("hnswlib", dimension=384, index_path=f"{d}/h.bin"),
            ),
            similarity_evaluation=SearchDistanceEvaluation(),
            config=Config(similarity_threshold=0.8),
        )
        # gptcache 0.1.44's hnswlib store returns numpy uint64 ids that its SQL store
        # cannot look up (every get misses); plain ints make it behave as released.
        search = cache.data_manager.v.search
        cache.data_manager.v.search = lambda *a, _s=search, **k: [  # type: ignore[method-assign]
            (float(dist), int(i)) for dist, i in _s(*a, **k)
        ]
        put(cached, f"answer to: {cached}", cache_obj=cache)
        got = get(query, cache_obj=cache)
        out.append({"cached": cached, "query": query, "gptcache_hit": got is not None})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="2 folds of a 12,000-pair subsample")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--fold", type=int, help="only fine-tune (and cache) this fold's adapters, then exit"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    p = load_pairs()
    fold = grouped_folds(p, FOLDS)
    cfg = dict(_tune.CONFIG)
    name = "qqp"
    if args.quick:
        # Whole groups only, 2 folds.
        rng = np.random.default_rng(1)
        groups = np.unique(p.group)
        keep = set(rng.permutation(groups)[: len(groups) // 3].tolist())
        idx = np.nonzero([g in keep for g in p.group.tolist()])[0][:12000]
        p = Pairs(p.texts, p.canon, p.a[idx], p.b[idx], p.y[idx], p.group[idx])
        fold = grouped_folds(p, 2)
        name = "quick"
    if args.fold is not None:
        _tune.fit_fold(p.canon, p.a, p.b, p.y, fold, args.fold, cfg, name)
        return
    y = p.y.astype(np.int8)
    plain_e = plain_embeddings(p)
    plain = np.einsum("ij,ij->i", plain_e[p.a], plain_e[p.b]).astype(np.float64)
    adapted = _tune.fit_folds(p.canon, p.a, p.b, p.y, fold, cfg, name)
    t_train = time.perf_counter() - t0
    a_txt = [p.texts[i] for i in p.a]
    b_txt = [p.texts[i] for i in p.b]
    lex = lexical_design(a_txt, b_txt)
    base = load_base_model()

    res: dict = {  # type: ignore[type-arg]
        "data": {
            "pairs": len(y),
            "duplicates": int(y.sum()),
            "folds": int(fold.max()) + 1,
            "quick": args.quick,
            "adapted_training": {**cfg, "method": "LoRA, CoSENT loss"},
        },
        "plain_cosine": {
            "tpr_at_1pct": tpr_at(plain, y, 0.01),
            "tpr_at_5pct": tpr_at(plain, y, 0.05),
        },
        "adapted_cosine": {
            "tpr_at_1pct": tpr_at(adapted, y, 0.01),
            "tpr_at_5pct": tpr_at(adapted, y, 0.05),
        },
    }
    res["plain_verifier"] = evaluate("plain", plain, lex, y, fold, p.group, plain)
    res["adapted_verifier"] = evaluate("adapted", adapted, lex, y, fold, p.group, plain)
    for key in ("adapted_cosine", "adapted_verifier", "plain_verifier"):
        for pct in ("1pct", "5pct"):
            r = res[key][f"tpr_at_{pct}"] / res["plain_cosine"][f"tpr_at_{pct}"]
            res[key][f"ratio_at_{pct}"] = r

    # Shipped artifacts: latency and the look-alikes.
    from rag_cache_plugin._embedders import AdaptedMiniLM

    emb = AdaptedMiniLM()
    ver = MatchVerifier.for_model(emb.model_id)
    bal = MatchVerifier.for_model(emb.model_id, "balanced")
    res["latency"] = latency(ver, a_txt, b_txt, adapted)
    qs = [p.canon[i] for i in p.b[:300]]
    res["latency"]["embed_ms_adapted"] = embed_latency(emb, qs)
    res["latency"]["embed_ms_plain"] = embed_latency(base, qs)
    looks = []
    for cached, query in LOOK_ALIKES:
        v = emb.embed([canonicalize(query), canonicalize(cached)])
        c = float(v[0] @ v[1])
        pv = base.encode([canonicalize(query), canonicalize(cached)], normalize_embeddings=True)
        s, b = ver.verify(query, cached, c), bal.verify(query, cached, c)
        looks.append(
            {
                "cached": cached,
                "query": query,
                "plain_cosine": float(pv[0] @ pv[1]),
                "adapted_cosine": c,
                "strict": s.match,
                "balanced": b.match,
                "score": round(s.score, 4),
                "blocked_by": s.evidence["blocked_by"],
            }
        )
    try:
        for row, g in zip(looks, gptcache_demo(base), strict=True):
            row["gptcache_hit"] = g["gptcache_hit"]
    except Exception as exc:  # GPTCache is context only
        res["gptcache_error"] = repr(exc)
    res["look_alikes"] = looks
    res["shipped"] = {
        "strict": ver.calibration["settings"]["strict"],
        "balanced": ver.calibration["settings"]["balanced"],
        "delta_bytes": (ROOT / "rag_cache_plugin" / "data" / "minilm_qe_delta.npz").stat().st_size,
    }
    res["run"] = {
        "seconds": round(time.perf_counter() - t0),
        "training_and_caches_seconds": round(t_train),
        "machine": f"{platform.machine()}, {platform.python_version()}, "
        f"torch threads {args.threads}",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "semantic_quick" if args.quick else "semantic"
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))


def markdown(r: dict) -> str:  # type: ignore[type-arg]
    d = r["data"]
    pc = r["plain_cosine"]
    lines = [
        "# Semantic matching on QQP pairs",
        "",
        f"{d['pairs']:,} labelled pairs ({d['duplicates']:,} duplicates), "
        f"{d['folds']} folds grouped by "
        "connected question; every score is out of fold (the adapted embedder is trained per fold, "
        "the verifier's score and thresholds are fitted on the other folds only).  TPR at a fixed "
        "FPR pools the test folds' scores (each fold scored by its own fitted verifier); the "
        "operating points below are what a user gets: thresholds fixed beforehand."
        + (" **Quick run: a subsample, 2 folds.**" if d["quick"] else ""),
        "",
        "| method | TPR @ 1% FPR | vs plain | TPR @ 5% FPR | vs plain |",
        "|---|---|---|---|---|",
        f"| plain cosine, all-MiniLM-L6-v2 | {pc['tpr_at_1pct']:.3f} | 1.00 | "
        f"{pc['tpr_at_5pct']:.3f} | 1.00 |",
    ]
    for key, label in (
        ("plain_verifier", "plain MiniLM + verifier"),
        ("adapted_cosine", "adapted MiniLM, cosine only"),
        ("adapted_verifier", "**adapted MiniLM + verifier (shipped)**"),
    ):
        x = r[key]
        lines.append(
            f"| {label} | {x['tpr_at_1pct']:.3f} | {x['ratio_at_1pct']:.2f} | "
            f"{x['tpr_at_5pct']:.3f} | {x['ratio_at_5pct']:.2f} |"
        )
    lines += [
        "",
        "Operating points (thresholds chosen on the training folds, rates measured on the "
        "test folds):",
        "",
        "| verifier | setting | FPR | TPR | plain cosine TPR at that FPR | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("plain_verifier", "plain MiniLM"), ("adapted_verifier", "adapted MiniLM")):
        for s in ("strict", "balanced"):
            x = r[key][s]
            ratio = f"{x['ratio']:.2f}" if x["ratio"] else "n/a"
            lines.append(
                f"| {label} | {s} | {x['fpr']:.4f} | {x['tpr']:.3f} | "
                f"{x['plain_cosine_tpr_same_fpr']:.3f} | {ratio} |"
            )
    lat = r["latency"]
    lines += [
        "",
        f"verify(): {lat['verify_us_warm']:.1f} µs per candidate (query parse memoised), "
        f"{lat['verify_us_cold']:.1f} µs cold.  Embedding one question: adapted "
        f"{lat['embed_ms_adapted']:.1f} ms, plain {lat['embed_ms_plain']:.1f} ms (median).  "
        f"Shipped delta: {r['shipped']['delta_bytes'] / 1e6:.1f} MB.",
        "",
        "Look-alikes (shipped model and calibration):",
        "",
        "| cached | query | plain cos | adapted cos | GPTCache | strict | balanced | blocked by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["look_alikes"]:
        g = {True: "hit", False: "miss"}.get(x.get("gptcache_hit"), "n/a")  # type: ignore[arg-type]
        lines.append(
            f"| {x['cached']} | {x['query']} | {x['plain_cosine']:.3f} | "
            f"{x['adapted_cosine']:.3f} | "
            f"{g} | {'hit' if x['strict'] else 'miss'} | {'hit' if x['balanced'] else 'miss'} | "
            f"{', '.join(x['blocked_by']) or '-'} |"
        )
    lines += [
        "",
        "GPTCache 0.1.44: quick-start similarity setup (SearchDistanceEvaluation, "
        "similarity_threshold 0.8), embedding with plain all-MiniLM-L6-v2 since its default "
        "ONNX model cannot be fetched offline.",
        "",
        f"Run: {r['run']['seconds']} s ({r['run']['machine']}).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
