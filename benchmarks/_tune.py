"""Fine-tuning of all-MiniLM-L6-v2 for question equivalence with low-rank (LoRA) adapters.

Every linear layer of the six transformer blocks gets a rank-``r`` update trained with
the CoSENT loss on labelled pairs (peft does the adapter plumbing).  The shipped form
is the pair of factors per weight (``<param>@A``, ``<param>@B``, float16, the scale
folded into B), which ``AdaptedMiniLM`` multiplies out and adds to the base weights at
load time: one forward pass of the base model's size, a delta of under 3 MB.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._qqp import WORK, load_base_model
from rag_cache_plugin._embedders import AdaptedMiniLM, load_delta, mean_pool

# The shipped configuration (fit_verifier.py and bench_semantic.py use it).
CONFIG: dict[str, float | int] = {
    "rank": 32,
    "alpha": 64,
    "epochs": 1,
    "bs": 64,
    "lr": 1e-3,
    "scale": 20,
    "seed": 0,
}
TARGETS = r".*encoder\.layer\.\d+\..*(query|key|value|dense)"


def config_tag(cfg: dict[str, float | int]) -> str:
    return "lora_" + "_".join(f"{k}{v:g}" for k, v in sorted(cfg.items()))


def cosent(cos: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """CoSENT: every duplicate pair should score above every non-duplicate pair."""
    d = (cos[None, :] - cos[:, None]) * scale
    d = d - (1 - (y[:, None] > y[None, :]).float()) * 1e12
    return torch.logsumexp(torch.cat([torch.zeros(1), d.flatten()]), 0)


def _pool(bert: Any, tok: Any, texts: list[str], max_len: int) -> torch.Tensor:
    enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return mean_pool(bert(**enc).last_hidden_state, enc["attention_mask"])


def train(
    canon: list[str],
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    cfg: dict[str, float | int],
    *,
    log: str = "",
) -> dict[str, np.ndarray]:
    """Train adapters on the pairs (a[i], b[i], y[i]); returns the shipped delta."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(int(cfg["seed"]))
    rng = np.random.default_rng(int(cfg["seed"]))
    base = load_base_model()
    # Questions longer than 96 tokens are rare; their tails cost more than they teach.
    tok, max_len = base.tokenizer, min(96, int(base.max_seq_length))
    bert = get_peft_model(
        base[0].auto_model,
        LoraConfig(r=int(cfg["rank"]), lora_alpha=int(cfg["alpha"]), target_modules=TARGETS),
    )
    scaling = float(cfg["alpha"]) / float(cfg["rank"])
    params = [p for p in bert.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=0.01)
    bs = int(cfg["bs"])
    steps = int(cfg["epochs"]) * math.ceil(len(y) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=float(cfg["lr"]), total_steps=steps, pct_start=0.1, anneal_strategy="linear"
    )
    yt = torch.from_numpy(y.astype(np.float32))
    # Batches of pairs of similar length: random batches pad every question to the
    # longest of 2 * bs, which made a step several times slower.
    size = np.array([max(len(canon[i]), len(canon[j])) for i, j in zip(a, b, strict=True)])
    bert.train()
    t, step = time.perf_counter(), 0
    for _ in range(int(cfg["epochs"])):
        order = rng.permutation(len(y))
        order = order[np.argsort(size[order] // 16, kind="stable")]
        batches = [order[s : s + bs] for s in range(0, len(y), bs)]
        for k in rng.permutation(len(batches)):
            sel = batches[k]
            e = _pool(bert, tok, [canon[i] for i in a[sel]] + [canon[i] for i in b[sel]], max_len)
            loss = cosent((e[: len(sel)] * e[len(sel) :]).sum(-1), yt[sel], float(cfg["scale"]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if log and step % 100 == 0:
                print(
                    f"  {log} step {step}/{steps}: loss {loss.item():.3f} "
                    f"{time.perf_counter() - t:.0f}s",
                    flush=True,
                )
    return delta_of(bert, scaling)


def _delta_name(peft_name: str, part: str) -> str:
    """``base_model.model.<module>.lora_A.default.weight`` -> ``<module>.weight@A``."""
    module = peft_name.removeprefix("base_model.model.").split(".lora_")[0]
    return f"{module}.weight@{part}"


def delta_of(bert: Any, scaling: float) -> dict[str, np.ndarray]:
    """The adapters as ``<base param>@A`` (r, in) and ``@B`` (out, r), float16."""
    out: dict[str, np.ndarray] = {}
    for name, p in bert.named_parameters():
        for part in ("A", "B"):
            if f".lora_{part}." in name:
                arr = p.detach().float().numpy() * (scaling if part == "B" else 1.0)
                out[_delta_name(name, part)] = arr.astype(np.float16)
    return out


def fit_fold(
    canon: list[str],
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    k: int,
    cfg: dict[str, float | int],
    name: str,
) -> np.ndarray:
    """Cosines of fold ``k``'s pairs under adapters trained on the other folds (in their
    float16 shipped form, loaded as ``AdaptedMiniLM`` loads them); cached in .work/, so
    folds can be fitted by separate processes."""
    WORK.mkdir(exist_ok=True)
    path = _fold_path(name, cfg, k).with_suffix(".npy")
    te = fold == k
    if not path.exists():
        t = time.perf_counter()
        tr = ~te
        delta = train(canon, a[tr], b[tr], y[tr], cfg, log=f"fold {k}")
        np.savez(path.with_suffix(".npz"), **delta)
        emb = AdaptedMiniLM(delta=delta, model_id=f"fold{k}")
        qs = np.unique(np.concatenate([a[te], b[te]]))
        e = np.zeros((len(canon), emb.dim), dtype=np.float32)
        e[qs] = emb.embed([canon[i] for i in qs])
        np.save(path, np.einsum("ij,ij->i", e[a[te]], e[b[te]]).astype(np.float64))
        print(
            f"fold {k}: adapters trained on {int(tr.sum())} pairs "
            f"in {time.perf_counter() - t:.0f}s",
            flush=True,
        )
    return np.load(path, allow_pickle=False)  # type: ignore[no-any-return]


def _fold_path(name: str, cfg: dict[str, float | int], k: int) -> Path:
    return WORK / f"oof_{name}_{config_tag(cfg)}_f{k}.npz"


def fold_delta(k: int, cfg: dict[str, float | int], name: str) -> dict[str, np.ndarray]:
    """The delta ``fit_fold`` trained for fold ``k`` (trained without fold ``k``)."""
    return load_delta(_fold_path(name, cfg, k))


def fit_folds(
    canon: list[str],
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    cfg: dict[str, float | int],
    name: str,
) -> np.ndarray:
    """Out-of-fold cosine of every pair: each fold scored by adapters that never saw it."""
    cos = np.full(len(y), np.nan)
    for k in sorted(np.unique(fold).tolist()):
        cos[fold == k] = fit_fold(canon, a, b, y, fold, k, cfg, name)
    return cos


def fit_all(
    canon: list[str],
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    cfg: dict[str, float | int],
    name: str,
) -> dict[str, np.ndarray]:
    """Adapters trained on every pair (the shipped delta), cached in .work/."""
    WORK.mkdir(exist_ok=True)
    path = WORK / f"all_{name}_{config_tag(cfg)}.npz"
    if not path.exists():
        np.savez(path, **train(canon, a, b, y, cfg, log="all"))
    return load_delta(path)
