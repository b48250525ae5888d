"""The fine-tuning that makes the shipped delta: what it writes loads into the embedder."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import _tune
from rag_cache_plugin._embedders import AdaptedMiniLM

QUESTIONS = [
    "how do i learn python", "what is the best way to learn python",
    "how can i lose weight fast", "how do i lose weight quickly",
    "what is the capital of france", "what is the population of france",
    "how do i cook rice", "what is the boiling point of water",
]


def test_training_writes_low_rank_pairs_the_embedder_merges() -> None:
    torch.set_num_threads(1)
    a = np.array([0, 2, 4, 6, 0, 2, 4, 1])
    b = np.array([1, 3, 5, 7, 2, 4, 6, 3])
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=np.int8)
    delta = _tune.train(QUESTIONS, a, b, y, {**_tune.CONFIG, "bs": 4, "epochs": 4, "lr": 1e-3})
    # Every linear layer of the 6 blocks (q, k, v, attention out, intermediate, out).
    assert len(delta) == 6 * 6 * 2
    assert all(k.startswith("encoder.layer.") and k[-2:] in ("@A", "@B") for k in delta)
    name = "encoder.layer.0.attention.self.query.weight"
    rank = int(_tune.CONFIG["rank"])
    assert delta[f"{name}@A"].shape == (rank, 384) and delta[f"{name}@B"].shape == (384, rank)
    assert all(v.dtype == np.float16 for v in delta.values())
    assert any(np.abs(v).max() > 0 for k, v in delta.items() if k.endswith("@B"))

    tuned = AdaptedMiniLM(delta=delta, model_id="t")
    base = AdaptedMiniLM(delta={}, model_id="plain")
    before = dict(base._bert.named_parameters())[name].detach().numpy()
    after = dict(tuned._bert.named_parameters())[name].detach().numpy()
    step = delta[f"{name}@B"].astype(np.float32) @ delta[f"{name}@A"].astype(np.float32)
    np.testing.assert_allclose(after - before, step, atol=1e-5)

    def margin(model: AdaptedMiniLM) -> float:
        e = model.embed(QUESTIONS)
        cos = np.einsum("ij,ij->i", e[a], e[b])
        return float(cos[y == 1].min() - cos[y == 0].max())

    # Trained on these pairs, the duplicates' cosines clear the others' by more.
    assert margin(tuned) > margin(base) + 0.1
