"""Paraphrases are grouped through the semantic layer (the real all-MiniLM-L6-v2) and
warmed once; without semantic matching they stay apart."""

from __future__ import annotations

from pathlib import Path

from _warming_helpers import Clock, CountingRunner, Workload
from minilm_support import Counting

from rag_cache_plugin import CacheConfig, Hit, RagCache, SemanticConfig
from rag_cache_plugin.warming import CacheWarmer, Scoring

RESET = ["How do I reset my password?"] * 3 + ["How can I reset my password?"] * 2
EMAIL = ["How do I change my email address?", "How can I change my email address?"]
OTHER = ["What is the refund policy?"] * 2


def _cache(tmp_path: Path, clock: Clock, semantic: bool) -> RagCache:
    config = SemanticConfig(embedder=Counting(), model_id="all-MiniLM-L6-v2") \
        if semantic else None
    return RagCache(CacheConfig(sqlite_path=tmp_path / "c.db", semantic=config), clock=clock)


async def test_a_family_of_paraphrases_is_warmed_once(tmp_path: Path) -> None:
    clock = Clock()
    async with _cache(tmp_path, clock, semantic=True) as cache:
        warmer = CacheWarmer(cache, flush_interval=None,
                             scoring=Scoring(half_life=3600.0, min_expected_hits=0.5))
        work = Workload(cache)
        work.run(RESET + EMAIL + OTHER)
        kinds = [e.kind for e in work.events if isinstance(e, Hit)]
        assert kinds.count("semantic") == 3  # the paraphrases were served semantically
        cache.clear()  # a new deployment: nothing cached, the log remains
        patterns = warmer.analyze_query_patterns()
        by_q = {p.question: p for p in patterns}
        reset = by_q["How do I reset my password?"]
        assert set(reset.members) == {"how do i reset my password", "how can i reset my password"}
        assert reset.total == 5 and not reset.cached
        assert len(patterns) == 3  # reset family, email family, refund policy
        assert sorted(len(p.members) for p in patterns) == [1, 2, 2]
        runner = CountingRunner()
        report = await warmer.execute_warming(runner=runner)
        assert sorted(runner.calls) == sorted(
            ["How do I reset my password?", "How do I change my email address?",
             "What is the refund policy?"])
        assert report.warmed == 3
        # Every question of the workload hits now, paraphrases semantically.
        assert work.run(RESET + EMAIL + OTHER) == (9, 0)
        assert warmer.get_warming_stats().hits == 9
        warmer.close()


def test_without_semantic_matching_paraphrases_stay_apart(tmp_path: Path) -> None:
    with _cache(tmp_path, Clock(), semantic=False) as cache:
        warmer = CacheWarmer(cache, flush_interval=None)
        Workload(cache).run([*RESET, "how do I reset my password"])
        patterns = {p.question: p for p in warmer.analyze_query_patterns()}
        # Canonical forms group ("How do I ..." asked two ways), paraphrases do not.
        assert {p.members for p in patterns.values()} == {
            ("how do i reset my password",), ("how can i reset my password",)}
        assert patterns["how do I reset my password"].total == 4
        warmer.close()
