"""Reproduce the shipped verifier artifacts from the QQP pairs.

    python benchmarks/fit_verifier.py

Writes ``rag_cache_plugin/data/minilm_qe_delta.npz`` (+ ``.json``: id, checksum,
training settings) and ``rag_cache_plugin/data/verifier_calibration.json``.

Steps: (1) embed every question with plain all-MiniLM-L6-v2 and cache its hidden
states in ``.work/`` (once); (2) split the pairs into 5 folds grouped by connected
question; for each fold train the adapted embedder's head on the other four and embed
the fold: out-of-fold cosines; (3) train the head on all pairs: the shipped delta;
(4) fit the calibrated score on the out-of-fold cosines, its operating curve measured
in the same grouped folds (so thresholds are not fitted on training cosines);
(5) calibrate plain all-MiniLM-L6-v2 the same way, and derive the stricter generic
calibration for other embedders from it.

Run time on this 2-core machine (shared with other work): caches ~30 min once, then
~6 head trainings of 2-4 min each and ~2 min of calibration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _head
from benchmarks._qqp import (
    ROOT,
    SPLIT_LAYER,
    WORK,
    grouped_folds,
    hidden_states,
    load_pairs,
    plain_embeddings,
)
from rag_cache_plugin._embedders import DELTA_FILE, META_FILE
from rag_cache_plugin._verifier import CALIBRATION_FILE, GENERIC, MatchVerifier, calibrate

ADAPTED_ID = "rag-cache/all-MiniLM-L6-v2-qe1"
PLAIN_ID = "sentence-transformers/all-MiniLM-L6-v2"
DATA_DIR = ROOT / "rag_cache_plugin" / "data"


def adapted_inputs(p):  # type: ignore[no-untyped-def]
    plain = plain_embeddings(p)
    if (WORK / f"pooled{SPLIT_LAYER}_{len(plain)}.npy").exists():
        return _head.pooled_inputs(p, None, None, plain)  # type: ignore[arg-type]
    h, off = hidden_states(p)
    return _head.pooled_inputs(p, h, off, plain)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    p = load_pairs()
    fold = grouped_folds(p, 5)
    x = adapted_inputs(p)
    cfg = _head.CONFIG
    oof = _head.fit_folds(x, p.a, p.b, p.y, fold, cfg, "qqp")
    print(f"out-of-fold cosines ready ({time.perf_counter() - t0:.0f}s)", flush=True)
    delta = _head.fit_all(x, p.a, p.b, p.y, cfg, "qqp")
    DATA_DIR.mkdir(exist_ok=True)
    np.savez(DATA_DIR / DELTA_FILE, **delta)
    raw = (DATA_DIR / DELTA_FILE).read_bytes()
    meta = {
        "model_id": ADAPTED_ID,
        "base": PLAIN_ID,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "head_layer": SPLIT_LAYER,
        "training": {
            **cfg,
            "loss": "CoSENT" + (" + MNRL" if cfg.get("mnrl") else ""),
            "pairs": len(p.y),
            "data": "qqp_pairs_dev.jsonl",
        },
    }
    (DATA_DIR / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"delta: {len(raw) / 1e6:.2f} MB ({time.perf_counter() - t0:.0f}s)", flush=True)

    a_txt = [p.texts[i] for i in p.a]
    b_txt = [p.texts[i] for i in p.b]
    plain = x[:, x.shape[1] // 2 :]
    plain_cos = np.einsum("ij,ij->i", plain[p.a], plain[p.b]).astype(np.float64)
    models = {
        ADAPTED_ID: calibrate(
            a_txt, b_txt, p.y, oof, group=p.group, fold=fold, model_id=ADAPTED_ID
        ),
        PLAIN_ID: calibrate(
            a_txt, b_txt, p.y, plain_cos, group=p.group, fold=fold, model_id=PLAIN_ID
        ),
    }
    models[GENERIC] = generic(models[PLAIN_ID])
    doc = {
        "format": 1,
        "source": "benchmarks/fit_verifier.py on qqp_pairs_dev.jsonl",
        "models": models,
    }
    (DATA_DIR / CALIBRATION_FILE).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    for mid, cal in models.items():
        print(mid, json.dumps(cal["settings"]))
    print(f"done in {time.perf_counter() - t0:.0f}s")


def generic(plain: dict[str, Any]) -> dict[str, Any]:
    """For embedders without a calibration: the plain MiniLM score operated at half the
    target false-hit rate and never below cosine 0.9.  Its rates were measured on
    MiniLM, not on the unknown model: ``MatchVerifier.fit`` on the user's own pairs
    replaces it."""
    g: dict[str, Any] = json.loads(json.dumps(plain))
    g["model_id"] = GENERIC
    g["measured_with"] = PLAIN_ID
    g["min_cosine"] = 0.9
    v = MatchVerifier(g)
    for name, target in (("strict", 0.005), ("balanced", 0.025)):
        t = v.threshold_for(target)
        fpr, tpr = v.rates(t)
        g["settings"][name] = {"target_fpr": target, "threshold": t, "cv_fpr": fpr, "cv_tpr": tpr}
    return g


if __name__ == "__main__":
    main()
