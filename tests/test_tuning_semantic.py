"""The semantic-threshold action on a real RagCache with the real semantic layer
(memory + a real SQLite file; an embedder with known cosines).  Users report the
wrong semantic hits through ``feedback``; every conversation is a fresh partition
(its history is part of the context), so per-partition learning alone never
catches up and the base threshold has to move."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from _tuning_helpers import (
    FakeClock,
    Rig,
    TableEmbedder,
    first_window,
    make_rig,
    semantic_conversations,
)

from rag_cache_plugin import MatchVerifier, SemanticConfig
from rag_cache_plugin.tuning import DEFAULT_RULES, TuningBounds, TuningReport

# The table embedder is an unknown model: the verifier's generic calibration applies.
BALANCED = MatchVerifier.for_model(TableEmbedder.model_id, "balanced")
STRICT = MatchVerifier.for_model(TableEmbedder.model_id, "strict")
PARA_COS, ALIKE_COS = 0.99, 0.955  # both pass "balanced"; only the first passes "strict"
TEXT = ("how do i configure a with b and c", "how would i configure a with b and c")


def score(cos: float) -> float:
    return BALANCED.verify(TEXT[1], TEXT[0], cos).score


def test_the_workload_cosines_straddle_the_settings() -> None:
    assert score(ALIKE_COS) >= BALANCED.threshold and score(PARA_COS) >= STRICT.threshold
    assert score(ALIKE_COS) < STRICT.threshold


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def semantic_rig(tmp_path: Path, setting: str, **tuner: object) -> tuple[Rig, TableEmbedder]:
    emb = TableEmbedder()
    rig = make_rig(tmp_path, clock=FakeClock(),
                   semantic=SemanticConfig(embedder=emb, setting=setting), tuner=dict(tuner))
    return rig, emb


def serve_conversations(rig: Rig, convs: Iterator[tuple[str, str, str]], window: int,
                        n: int = 300, look_alikes: bool = True) -> TuningReport:
    """Each conversation: a question is computed and stored, then asked again in
    other words (a right semantic hit) and a similar but different question is
    asked (a wrong one, reported as such)."""
    cache, clock = rig.cache, rig.clock
    for k in range(n):
        base, para, alike = next(convs)
        ctx = f"conversation {window}-{k}"
        clock.advance(1.0)
        assert cache.lookup(base, context=ctx) is None
        cache.store(base, f"answer to {base}", context=ctx)
        asks = [(para, True), (alike, False), (para, True)] if look_alikes else \
            [(para, True), (para, True), (para, True)]
        for q, right in asks:
            clock.advance(1.0)
            hit = cache.lookup(q, context=ctx)
            if hit is not None and hit.kind == "semantic":
                cache.feedback(hit, correct=right)
    report = rig.tuner.apply_tuning()
    rig.reports.append(report)
    return report


def test_reported_false_hits_tighten_the_threshold_until_within_the_bound(
        tmp_path: Path, rigs: list[Rig]) -> None:
    rig, emb = semantic_rig(tmp_path, "balanced")
    rigs.append(rig)
    convs = semantic_conversations(emb, 300 * 5, random.Random(1), paraphrase=PARA_COS,
                                   look_alike=ALIKE_COS)
    thresholds = []
    for w in range(5):
        serve_conversations(rig, convs, w)
        thresholds.append(rig.cache.semantic.verifier.threshold)  # type: ignore[union-attr]
    first = rig.reports[0].metrics
    assert first["false_hit_rate"] == pytest.approx(1 / 3)  # 1 look-alike per 2 paraphrases
    assert first["false_hit_excess"] == pytest.approx(1 / 3 - 0.05)
    change = next(d for d in rig.tuner.history if d.action == "tighten_semantic")
    assert change.old == {"threshold": pytest.approx(BALANCED.threshold)}
    assert change.new["threshold"] > BALANCED.threshold and "above the 5% bound" in change.reason
    # Within three windows the false-hit rate is under the strict setting's 1%.
    reached = next(i for i, r in enumerate(rig.reports, 1) if r.metrics["false_hit_rate"]
                   is not None and r.metrics["false_hit_rate"] <= 0.01)
    assert reached <= 3
    for r in rig.reports[reached - 1:]:
        assert r.metrics["false_hit_rate"] <= 0.01
        assert r.metrics["semantic_hit_rate"] == pytest.approx(0.5)  # paraphrases still hit
    assert min(thresholds) >= BALANCED.threshold  # never looser than the chosen setting
    assert max(thresholds) > score(ALIKE_COS) >= BALANCED.threshold
    assert not [d for d in rig.tuner.history if d.kind == "rollback"]
    print(f"semantic: false-hit rate <= 1% in window {reached}; thresholds {thresholds}")


def test_the_threshold_relaxes_back_to_the_chosen_setting_and_never_past_it(
        tmp_path: Path, rigs: list[Rig]) -> None:
    # Quick relaxing for the test (the default waits 24 quiet windows).
    rules = [dataclasses.replace(r, windows=2) if r.name == "semantic-relax" else r
             for r in DEFAULT_RULES]
    rig, emb = semantic_rig(tmp_path, "balanced", rules=rules)
    rigs.append(rig)
    rng = random.Random(2)
    # Phase 1: look-alikes reported wrong; phase 2: only right paraphrases that need
    # the balanced threshold (cosine 0.93), so strictness now costs hits.
    noisy = semantic_conversations(emb, 300 * 3, rng, paraphrase=PARA_COS,
                                   look_alike=ALIKE_COS)
    for w in range(3):
        serve_conversations(rig, noisy, w)
    tightened = rig.cache.semantic.verifier.threshold  # type: ignore[union-attr]
    assert tightened > score(ALIKE_COS)
    quiet = semantic_conversations(emb, 300 * 6, rng, paraphrase=ALIKE_COS,
                                   look_alike=ALIKE_COS)
    for w in range(3, 9):
        serve_conversations(rig, quiet, w, look_alikes=False)
        assert rig.cache.semantic.verifier.threshold >= BALANCED.threshold  # type: ignore[union-attr]
    relax = [d for d in rig.tuner.history if d.action == "relax_semantic"]
    assert relax[0].kind == "change"
    assert rig.cache.semantic.verifier.threshold == pytest.approx(BALANCED.threshold)  # type: ignore[union-attr]
    assert relax[-1].kind == "keep"
    assert rig.reports[-1].metrics["semantic_hit_rate"] == pytest.approx(0.75)
    need = rig.tuner.analyze_tuning_need(rig.reports[-1].metrics)
    assert not need.needed and need.metrics["semantic_tightening"] == pytest.approx(0.0)
    assert "calibrated bound of the chosen setting" in str(rig.tuner.knobs.propose(
        "relax_semantic", step=2.0, shadow=None, metrics={}))


def test_the_semantic_knob_respects_the_user_setting(tmp_path: Path, rigs: list[Rig]) -> None:
    rig, _ = semantic_rig(tmp_path, "strict")
    rigs.append(rig)
    knob = rig.tuner.knobs.semantic
    bound = STRICT.threshold
    assert knob is not None and (knob.floor, knob.target) == (pytest.approx(bound), 0.01)
    assert knob.propose_relax({}) == ("the semantic threshold is at the calibrated bound "
                                      f"of the chosen setting ({bound:g})")
    knob.set({"threshold": 0.5})  # below the bound: held at the bound
    assert rig.cache.semantic.verifier.threshold == pytest.approx(bound)  # type: ignore[union-attr]
    tighter = knob.propose_tighten({"false_hit_rate": 0.1, "false_hit_reports": 3})
    assert not isinstance(tighter, str)
    assert tighter.new["threshold"] == pytest.approx(min(STRICT.tighten(bound), 0.99))
    assert tighter.new["threshold"] > bound
    config = rig.tuner.get_current_config()["semantic"]
    assert config == {"threshold": pytest.approx(bound), "floor": pytest.approx(bound),
                      "target_false_hit_rate": 0.01, "setting": "strict"}
    off = make_rig(tmp_path / "off", tuner={"bounds": TuningBounds(semantic=False)})
    rigs.append(off)
    assert off.tuner.knobs.semantic is None
    assert off.tuner.knobs.propose("tighten_semantic", step=2.0, shadow=None,
                                   metrics={}) == "no semantic layer to tune"


def test_false_hit_reports_are_a_bound_to_reach_not_noise(tmp_path: Path,
                                                          rigs: list[Rig]) -> None:
    """Without the tuner, per-partition learning leaves the rate where it was."""
    rig, emb = semantic_rig(tmp_path, "balanced", dry_run=True)
    rigs.append(rig)
    convs = semantic_conversations(emb, 300 * 3, random.Random(3), paraphrase=PARA_COS,
                                   look_alike=ALIKE_COS)
    for w in range(3):
        serve_conversations(rig, convs, w)
    assert [r.metrics["false_hit_rate"] for r in rig.reports] == [pytest.approx(1 / 3)] * 3
    assert first_window(rig.reports, "semantic_tightening", 1e-9) is None
    assert rig.tuner.history[0].kind == "recommend"
    assert rig.tuner.history[0].action == "tighten_semantic"
