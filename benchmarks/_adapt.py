"""Training of the adapted embedder's delta: the top transformer layers of
all-MiniLM-L6-v2, trained for question equivalence on cached lower-layer hidden
states (so a training step runs only the layers being trained)."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch import nn

from benchmarks._qqp import SPLIT_LAYER


class TopLayers(nn.Module):
    """Layers ``SPLIT_LAYER..`` of the base model, then mean pooling and L2 norm:
    exactly what sentence-transformers computes above the cached hidden states."""

    def __init__(self, base) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        bert = base[0].auto_model
        self.layers = nn.ModuleList(copy.deepcopy(bert.encoder.layer[SPLIT_LAYER:]))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        add = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        for layer in self.layers:
            out = layer(h, attention_mask=add)
            h = out[0] if isinstance(out, tuple) else out
        m = mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def batch(h: np.ndarray, off: np.ndarray, ids: np.ndarray, max_len: int = 64):  # type: ignore[no-untyped-def]
    lens = np.minimum(off[ids + 1] - off[ids], max_len)
    T = int(lens.max())
    x = np.zeros((len(ids), T, h.shape[1]), dtype=np.float32)
    m = np.zeros((len(ids), T), dtype=np.float32)
    for r, (i, n) in enumerate(zip(ids, lens, strict=True)):
        x[r, :n] = h[off[i] : off[i] + n]
        m[r, :n] = 1
    return torch.from_numpy(x), torch.from_numpy(m)


def embed(model: TopLayers, h: np.ndarray, off: np.ndarray, ids: np.ndarray, bs: int = 256) -> np.ndarray:
    model.eval()
    order = np.argsort(off[ids + 1] - off[ids])
    out = np.zeros((len(ids), h.shape[1]), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(ids), bs):
            sel = order[s : s + bs]
            x, m = batch(h, off, ids[sel], max_len=10_000)
            out[sel] = model(x, m).numpy()
    return out


def cosent(cos: torch.Tensor, y: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT: every positive pair should be more similar than every negative pair."""
    d = (cos[None, :] - cos[:, None]) * scale  # d[i, j] = cos_j - cos_i
    keep = (y[:, None] > y[None, :]).float()  # i positive, j negative
    d = d - (1 - keep) * 1e12
    return torch.logsumexp(torch.cat([torch.zeros(1), d.flatten()]), 0)


def train(base, h: np.ndarray, off: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray, *,  # type: ignore[no-untyped-def]
          epochs: float = 1.0, bs: int = 64, lr: float = 2e-5, mnrl: float = 0.0,
          seed: int = 0, log_every: int = 200) -> TopLayers:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TopLayers(base)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = int(math.ceil(len(y) / bs * epochs))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, (steps - s) / steps))
    # Batches of pairs of similar length (little padding), in random order.
    plen = np.maximum(off[a + 1] - off[a], off[b + 1] - off[b]).astype(np.float64)
    chunks = []
    for _ in range(int(math.ceil(epochs))):
        by_len = np.argsort(plen + rng.uniform(0, 6, len(plen)), kind="stable")
        batches = [by_len[i : i + bs] for i in range(0, len(by_len), bs)]
        chunks += [batches[i] for i in rng.permutation(len(batches))]
    order = np.concatenate(chunks)
    t = time.perf_counter()
    yt = torch.from_numpy(y.astype(np.float32))
    for s in range(steps):
        sel = order[s * bs : (s + 1) * bs]
        x, m = batch(h, off, np.concatenate([a[sel], b[sel]]))
        e = model(x, m)
        ea, eb = e[: len(sel)], e[len(sel) :]
        cos = (ea * eb).sum(-1)
        loss = cosent(cos, yt[sel])
        if mnrl:
            pos = yt[sel] > 0
            if pos.sum() > 1:
                sim = ea[pos] @ eb[pos].T * 20.0
                lab = torch.arange(int(pos.sum()))
                loss = loss + mnrl * 0.5 * (nn.functional.cross_entropy(sim, lab)
                                            + nn.functional.cross_entropy(sim.T, lab))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (s + 1) % log_every == 0:
            print(f"  step {s + 1}/{steps} loss {loss.item():.3f} {time.perf_counter() - t:.0f}s", flush=True)
    model.eval()
    return model


def delta(model: TopLayers, base) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Tuned minus base weights, by the base model's parameter names."""
    ref = TopLayers(base).state_dict()
    out = {}
    for k, v in model.state_dict().items():
        i, rest = k.split(".", 2)[1:]
        name = f"encoder.layer.{int(i) + SPLIT_LAYER}.{rest}"
        out[name] = (v - ref[k]).numpy().astype(np.float16)
    return out


# The shipped configuration (benchmarks/fit_verifier.py and bench_semantic.py use it).
CONFIG: dict[str, float | int] = {"epochs": 1.0, "bs": 64, "lr": 3e-5, "mnrl": 0.0, "seed": 0}


def config_tag(cfg: dict[str, float | int]) -> str:
    return "_".join(f"{k}{v:g}" for k, v in sorted(cfg.items()))


def apply_delta(base, d: dict[str, np.ndarray]) -> TopLayers:  # type: ignore[no-untyped-def]
    """TopLayers of the base model with a (float16) delta added, as the shipped embedder does."""
    model = TopLayers(base)
    sd = model.state_dict()
    with torch.no_grad():
        for name, v in d.items():
            i, rest = name.split(".", 3)[2:]
            sd[f"layers.{int(i) - SPLIT_LAYER}.{rest}"] += torch.from_numpy(v.astype(np.float32))
    model.load_state_dict(sd)
    model.eval()
    return model


def holdout(p, fold: np.ndarray, h: np.ndarray, off: np.ndarray, base,  # type: ignore[no-untyped-def]
            cfg: dict[str, float | int], test_fold: int = 0,
            train_idx: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Train on every fold but ``test_fold`` (cached in .work/): the delta, and the cosine of
    each pair of ``test_fold`` by the model with that (float16) delta applied."""
    from benchmarks._qqp import WORK

    tr = np.nonzero(fold != test_fold)[0] if train_idx is None else train_idx
    te = np.nonzero(fold == test_fold)[0]
    tag = f"{config_tag(cfg)}_n{len(tr)}_f{test_fold}"
    dpath, cpath = WORK / f"delta_{tag}.npz", WORK / f"holdout_{tag}.npy"
    if dpath.exists():
        with np.load(dpath, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    else:
        t = time.perf_counter()
        model = train(base, h, off, p.a[tr], p.b[tr], p.y[tr], **cfg)  # type: ignore[arg-type]
        d = delta(model, base)
        np.savez(dpath, **d)
        print(f"trained on {len(tr)} pairs in {time.perf_counter() - t:.0f}s", flush=True)
    if not cpath.exists():
        model = apply_delta(base, d)
        q = np.unique(np.concatenate([p.a[te], p.b[te]]))
        emb = embed(model, h, off, q)
        where = {int(i): j for j, i in enumerate(q)}
        ea = emb[[where[int(i)] for i in p.a[te]]]
        eb = emb[[where[int(i)] for i in p.b[te]]]
        np.save(cpath, np.einsum("ij,ij->i", ea, eb).astype(np.float64))
    return d, np.load(cpath, allow_pickle=False)


def oof_cosines(p, fold: np.ndarray, h: np.ndarray, off: np.ndarray, base,  # type: ignore[no-untyped-def]
                cfg: dict[str, float | int], folds: list[int] | None = None) -> np.ndarray:
    """Cosine of every pair by a model trained without the pair's fold (cached per fold).
    Pairs of folds not computed (``folds`` given) are NaN."""
    from benchmarks._qqp import WORK

    cos = np.full(len(p.y), np.nan)
    for k in sorted(np.unique(fold).tolist()) if folds is None else folds:
        path = WORK / f"oof_{config_tag(cfg)}_k{int(fold.max()) + 1}_f{k}.npy"
        te = np.nonzero(fold == k)[0]
        if not path.exists():
            t = time.perf_counter()
            tr = np.nonzero(fold != k)[0]
            model = train(base, h, off, p.a[tr], p.b[tr], p.y[tr], **cfg)  # type: ignore[arg-type]
            q = np.unique(np.concatenate([p.a[te], p.b[te]]))
            emb = embed(model, h, off, q)
            where = {int(i): j for j, i in enumerate(q)}
            ea = emb[[where[int(i)] for i in p.a[te]]]
            eb = emb[[where[int(i)] for i in p.b[te]]]
            np.save(path, np.einsum("ij,ij->i", ea, eb).astype(np.float64))
            print(f"fold {k}: trained on {len(tr)} pairs in {time.perf_counter() - t:.0f}s", flush=True)
        cos[te] = np.load(path, allow_pickle=False)
    return cos
