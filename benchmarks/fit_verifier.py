"""Reproduce the shipped verifier artifacts from the QQP pairs.

    python benchmarks/fit_verifier.py

Writes ``rag_cache_plugin/data/minilm_qe_delta.npz`` (+ ``.json``: id, checksum,
training settings) and ``rag_cache_plugin/data/verifier_calibration.json``.

Steps: (1) split the pairs into 3 folds grouped by connected question; for each fold
fine-tune LoRA adapters of all-MiniLM-L6-v2 on the other two and embed the fold:
out-of-fold cosines (cached in ``.work/``, shared with bench_semantic.py); (2) the shipped
delta: fold 0's adapters (trained on the other two folds), or with ``--ship all``
adapters fine-tuned on every pair; (3) fit the calibrated score on the out-of-fold
cosines, its operating curve measured in the same grouped folds (so thresholds are not
fitted on training cosines); (4) calibrate plain all-MiniLM-L6-v2 the same way, and
derive the stricter generic calibration for other embedders from it.

Run time on this 2-core machine: ~16 min per fold with two threads (nothing is redone
when bench_semantic.py has cached the folds; ``--ship all`` adds ~25 min), then under a
minute of calibration.
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

from benchmarks import _tune
from benchmarks._qqp import FOLDS, ROOT, grouped_folds, load_pairs, plain_embeddings
from rag_cache_plugin._embedders import DELTA_FILE, META_FILE
from rag_cache_plugin._verifier import CALIBRATION_FILE, GENERIC, MatchVerifier, calibrate

ADAPTED_ID = "rag-cache/all-MiniLM-L6-v2-qe2"
PLAIN_ID = "sentence-transformers/all-MiniLM-L6-v2"
DATA_DIR = ROOT / "rag_cache_plugin" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--ship",
        choices=["fold0", "all"],
        default="fold0",
        help="ship fold 0's adapters (trained on the other folds, as measured; the "
        "default) or adapters trained on every pair (~25 min more here)",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    p = load_pairs()
    fold = grouped_folds(p, FOLDS)
    cfg = _tune.CONFIG
    oof = _tune.fit_folds(p.canon, p.a, p.b, p.y, fold, cfg, "qqp")
    print(f"out-of-fold cosines ready ({time.perf_counter() - t0:.0f}s)", flush=True)
    if args.ship == "all":
        delta, trained_on = _tune.fit_all(p.canon, p.a, p.b, p.y, cfg, "qqp"), len(p.y)
    else:
        delta, trained_on = _tune.fold_delta(0, cfg, "qqp"), int((fold != 0).sum())
    DATA_DIR.mkdir(exist_ok=True)
    np.savez(DATA_DIR / DELTA_FILE, **delta)
    raw = (DATA_DIR / DELTA_FILE).read_bytes()
    meta = {
        "model_id": ADAPTED_ID,
        "base": PLAIN_ID,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "training": {
            **cfg,
            "method": "LoRA on every linear layer of the transformer blocks",
            "loss": "CoSENT",
            "pairs": trained_on,
            "data": "qqp_pairs_dev.jsonl" + (" (folds 1-2 of 3)" if args.ship == "fold0" else ""),
        },
    }
    (DATA_DIR / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"delta: {len(raw) / 1e6:.2f} MB ({time.perf_counter() - t0:.0f}s)", flush=True)

    a_txt = [p.texts[i] for i in p.a]
    b_txt = [p.texts[i] for i in p.b]
    plain = plain_embeddings(p)
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
