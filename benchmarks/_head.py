"""Training of the adapted embedder's head: a small residual MLP over two mean-pooled
layers of all-MiniLM-L6-v2 (layer 4 and the final layer), trained for question
equivalence on cached pooled states, so training takes minutes on a CPU while the
shipped embedder still runs one forward pass of the base model."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from benchmarks._qqp import SPLIT_LAYER, WORK


def pooled_inputs(p, h: np.ndarray, off: np.ndarray, plain: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(n, 768) float32: mean-pooled layer-``SPLIT_LAYER`` states, then the plain embedding."""
    path = WORK / f"pooled{SPLIT_LAYER}_{len(plain)}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    out = np.zeros((len(plain), h.shape[1]), dtype=np.float32)
    step = 4096
    for s in range(0, len(plain), step):
        lo, hi = off[s], off[min(s + step, len(plain))]
        block = h[lo:hi].astype(np.float32)
        starts = off[s : min(s + step, len(plain))] - lo
        sums = np.add.reduceat(block, starts, axis=0)
        out[s : s + len(starts)] = sums / np.diff(off[s : min(s + step, len(plain)) + 1])[:, None]
    x = np.hstack([out, plain]).astype(np.float32)
    np.save(path, x)
    return x


class Head(nn.Module):
    """e = normalize(final + MLP(LayerNorm(pool4), final)); the MLP's last layer starts at
    zero, so an untrained head is exactly plain MiniLM."""

    def __init__(self, dim: int = 384, hidden: int = 512) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(2 * dim, hidden)
        self.down = nn.Linear(hidden, dim)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = x.shape[1] // 2
        low, final = x[:, :dim], x[:, dim:]
        z = torch.cat([self.norm(low), final * math.sqrt(dim)], 1)
        e = final + self.down(nn.functional.gelu(self.up(z)))
        return nn.functional.normalize(e, dim=-1)


def cosent(cos: torch.Tensor, y: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    d = (cos[None, :] - cos[:, None]) * scale
    keep = (y[:, None] > y[None, :]).float()
    d = d - (1 - keep) * 1e12
    return torch.logsumexp(torch.cat([torch.zeros(1), d.flatten()]), 0)


def train(
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 10,
    bs: int = 256,
    lr: float = 1e-3,
    mnrl: float = 0.0,
    hidden: int = 512,
    wd: float = 0.01,
    seed: int = 0,
    log: bool = False,
) -> Head:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Head(x.shape[1] // 2, hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps = epochs * math.ceil(len(y) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    X = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.float32))
    t = time.perf_counter()
    for ep in range(epochs):
        model.train()
        order = rng.permutation(len(y))
        for s in range(0, len(y), bs):
            sel = order[s : s + bs]
            e = model(X[np.concatenate([a[sel], b[sel]])])
            ea, eb = e[: len(sel)], e[len(sel) :]
            loss = cosent((ea * eb).sum(-1), yt[sel])
            if mnrl:
                pos = yt[sel] > 0
                if pos.sum() > 1:
                    sim = ea[pos] @ eb[pos].T * 20.0
                    lab = torch.arange(int(pos.sum()))
                    loss = loss + mnrl * 0.5 * (
                        nn.functional.cross_entropy(sim, lab)
                        + nn.functional.cross_entropy(sim.T, lab)
                    )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if log:
            print(
                f"  epoch {ep + 1}: loss {loss.item():.3f} {time.perf_counter() - t:.0f}s",
                flush=True,
            )
    model.eval()
    return model


def embed(model: Head, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


# The shipped configuration (fit_verifier.py and bench_semantic.py use it).
CONFIG: dict[str, float | int] = {
    "epochs": 5,
    "bs": 256,
    "lr": 1e-3,
    "mnrl": 0.0,
    "hidden": 512,
    "wd": 0.01,
    "seed": 0,
}


def config_tag(cfg: dict[str, float | int]) -> str:
    return "_".join(f"{k}{v:g}" for k, v in sorted(cfg.items()))


def weights(model: Head) -> dict[str, np.ndarray]:
    """The head's parameters as float16 arrays named ``head.*`` (the shipped form)."""
    return {f"head.{k}": v.numpy().astype(np.float16) for k, v in model.state_dict().items()}


def from_weights(w: dict[str, np.ndarray]) -> Head:
    hidden = w["head.up.weight"].shape[0]
    model = Head(w["head.norm.weight"].shape[0], hidden)
    model.load_state_dict({k[5:]: torch.from_numpy(v.astype(np.float32)) for k, v in w.items()})
    model.eval()
    return model


def fit_folds(
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    cfg: dict[str, float | int],
    name: str,
) -> np.ndarray:
    """Out-of-fold cosine of every pair: a head trained without the pair's fold (its
    float16 weights, as shipped), cached per fold in .work/."""
    cos = np.full(len(y), np.nan)
    for k in sorted(np.unique(fold).tolist()):
        path = WORK / f"headoof_{name}_{config_tag(cfg)}_f{k}.npy"
        te = fold == k
        if not path.exists():
            t = time.perf_counter()
            tr = ~te
            model = train(x, a[tr], b[tr], y[tr], **cfg)  # type: ignore[arg-type]
            e = embed(from_weights(weights(model)), x)
            np.save(path, np.einsum("ij,ij->i", e[a[te]], e[b[te]]).astype(np.float64))
            print(
                f"fold {k}: head trained on {int(tr.sum())} pairs "
                f"in {time.perf_counter() - t:.0f}s",
                flush=True,
            )
        cos[te] = np.load(path, allow_pickle=False)
    return cos


def fit_all(
    x: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    cfg: dict[str, float | int],
    name: str,
) -> dict[str, np.ndarray]:
    path = WORK / f"headall_{name}_{config_tag(cfg)}.npz"
    if not path.exists():
        np.savez(path, **weights(train(x, a, b, y, **cfg)))  # type: ignore[arg-type]
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
