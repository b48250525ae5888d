"""The tuner's parts and API: rules as data, bounds, strategies and the learner,
signals, shadow simulation, analyze_tuning_need, dry run, history, chain
boundaries and the background thread."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from pathlib import Path

import pytest
from _tuning_helpers import FakeClock, make_rig, rounds, scan_heavy, uniform

from rag_cache_plugin import ChainBoundary, Expired, Hit, Miss, RagCache
from rag_cache_plugin import tuning as tuning_module
from rag_cache_plugin._policies import simulate
from rag_cache_plugin._tuning.signals import Signals
from rag_cache_plugin.tuning import (
    DEFAULT_RULES,
    STRATEGIES,
    ActionStats,
    CacheTuner,
    Condition,
    Learner,
    Strategy,
    TuningBounds,
    TuningHistory,
    TuningRule,
    default_history_path,
    load_rules,
    run_shadow,
)

KEYS = [f"question {i}" for i in range(120)]


def test_public_names_are_pinned() -> None:
    assert tuning_module.__all__ == [
        "ACTIONS", "DEFAULT_RULES", "SIGNAL_NAMES", "STRATEGIES", "TARGETS", "ActionStats",
        "CacheTuner", "Change", "Condition", "Decision", "Finding", "Learner",
        "ShadowReport", "Strategy", "TuningBounds", "TuningHistory", "TuningNeed",
        "TuningReport", "TuningRule", "default_history_path", "load_rules", "run_shadow"]


# -- rules, bounds, strategies ------------------------------------------------------------


def test_rules_are_data_and_round_trip_through_json() -> None:
    text = json.dumps([r.to_dict() for r in DEFAULT_RULES])
    assert load_rules(json.loads(text)) == DEFAULT_RULES
    rule = TuningRule.from_dict({"metric": "hit_rate", "comparison": "<", "threshold": 0.5,
                                 "action": "increase_l1", "priority": 3, "cooldown": 4,
                                 "step": 1.5, "conditions": [["lookups", ">=", 100]]})
    assert rule.name == "increase_l1:hit_rate" and rule.judged_by == ("l1_hit_rate", 1)
    assert rule.conditions == (Condition("lookups", ">=", 100),)
    assert rule.fires({"hit_rate": 0.4, "lookups": 200})
    assert not rule.fires({"hit_rate": 0.4, "lookups": 50})
    assert not rule.fires({"hit_rate": None, "lookups": 200})  # undefined never fires
    for bad in ({"action": "rm -rf"}, {"comparison": "~"}, {"step": 0.5}, {"cooldown": -1},
                {"code": "lambda: 1"}):
        with pytest.raises(ValueError):
            TuningRule.from_dict({"metric": "hit_rate", "comparison": "<", "threshold": 0.5,
                                  "action": "increase_l1", **bad})
    with pytest.raises(ValueError, match="unique"):
        load_rules([rule, rule])
    assert [r.priority for r in DEFAULT_RULES] == sorted((r.priority for r in DEFAULT_RULES),
                                                         reverse=True)


def test_bounds_default_to_the_configuration_and_validate() -> None:
    b = TuningBounds().resolved(ttl=60.0, l1_entries=1000, l1_bytes=1 << 20)
    assert (b.min_ttl, b.max_ttl) == (60.0, 240.0)
    assert (b.min_l1_entries, b.max_l1_entries) == (1000, 4000)
    assert (b.min_l1_bytes, b.max_l1_bytes) == (1 << 20, 4 << 20)
    b = TuningBounds(allow_ttl_decrease=True, max_l1_entries=500).resolved(
        ttl=60.0, l1_entries=1000, l1_bytes=1 << 20)
    assert b.min_ttl == 15.0 and (b.min_l1_entries, b.max_l1_entries) == (500, 500)
    assert TuningBounds().resolved(ttl=None, l1_entries=10, l1_bytes=10).max_ttl is None
    with pytest.raises(ValueError):
        TuningBounds(min_l1_entries=10, max_l1_entries=5)
    with pytest.raises(ValueError):
        TuningBounds(max_ttl=0)
    with pytest.raises(ValueError):
        TuningBounds(policies=("clock",))


def test_strategies_order_their_boldness() -> None:
    c, b, a = (STRATEGIES[n] for n in ("conservative", "balanced", "aggressive"))
    assert c.step < b.step < a.step
    assert c.min_lookups > b.min_lookups > a.min_lookups
    assert c.windows > b.windows >= a.windows and c.cooldown >= b.cooldown >= a.cooldown
    assert STRATEGIES["adaptive"].adaptive and STRATEGIES["adaptive"].explore > 0


def test_learner_exploits_explores_and_climbs() -> None:
    learner = Learner(explore=0.0, stats={"increase_ttl": ActionStats(3, -0.05)})
    assert learner.estimate("increase_l1") == learner.prior  # untried: a little optimism
    assert learner.choose(["increase_ttl", "increase_l1"], str) == "increase_l1"
    assert learner.choose(["increase_ttl"], str) is None  # known to hurt: only explored
    learner.update("increase_l1", 0.2, kept=True)
    assert learner.estimate("increase_l1") == pytest.approx(0.2)
    assert learner.scale("increase_l1") == 1.5  # helped: bigger steps next time
    learner.update("increase_l1", -0.1, kept=False)
    assert learner.scale("increase_l1") == 0.75
    explorer = Learner(explore=1.0, seed=4)
    picks = {explorer.choose(["a", "b", "c"], str) for _ in range(50)}
    assert picks == {"a", "b", "c"}


# -- signals and shadow simulation -----------------------------------------------------


def test_signals_count_misses_after_expiry_and_sample_spatially() -> None:
    s = Signals(sample_size=100, rate=1.0)
    key = "ab" * 16
    s.listener(Expired("ns", key, "l1"))
    s.listener(Expired("ns", key, "l2"))  # one lookup, two tiers: one expiry
    s.listener(Miss("ns", key, 0.001))
    s.listener(Miss("ns", key, 0.001))  # asked again: absent, not expired
    s.listener(Expired("ns", "cd" * 16, "l1"))
    s.listener(Hit("ns", "cd" * 16, "l2", "exact", 0.001))  # found below: no miss
    s.listener(Miss("ns", "cd" * 16, 0.001))
    assert s.take().expired_misses == 1 and s.take().expired_misses == 0
    assert s.sample() == [key, key, "cd" * 16, "cd" * 16]
    half = Signals(sample_size=10_000, rate=0.5)
    keys = [f"{random.Random(i).getrandbits(128):032x}" for i in range(4000)]
    for k in keys:
        half.listener(Miss("ns", k, 0.0))
    assert 0.45 < len(half) / len(keys) < 0.55


def test_shadow_simulation_prefers_scan_resistance_and_miniatures_agree() -> None:
    rng = random.Random(2)
    trace: list[str] = []
    counter = iter(range(0, 10**9, 300))
    trace = scan_heavy([f"h{i}" for i in range(150)], 40, 300, rng, lambda: next(counter))
    report = run_shadow(trace, rate=1.0, policy="lru", capacity=200,
                        policies=("lru", "tinylfu", "s3fifo"), grow=(2.0, 4.0), shrink=0.5)
    assert report.best_policy in ("tinylfu", "s3fifo") and report.policy_gain > 0.1
    assert report.grow_factor is not None and report.shrink_loss is not None
    # Miniature caches on a spatially sampled trace make the same comparisons as the
    # full caches (levels shift with the heavy hitters a sample happens to hold;
    # differences between candidates on the same sample stay).
    ws = [f"{random.Random(i).getrandbits(64):016x}" for i in range(5000)]
    zipf = rng.choices(ws, [1 / (i + 1) ** 0.8 for i in range(5000)], k=60_000)
    sampled = [k for k in zipf if int(k[:8], 16) < (1 << 32) // 4]
    full = {p: simulate(p, zipf, 400) for p in ("lru", "tinylfu")}
    mini = run_shadow(sampled, rate=0.25, policy="lru", capacity=400,
                      policies=("tinylfu",), grow=(2.0,))
    assert abs(mini.policy_gain - (full["tinylfu"] - full["lru"])) < 0.03
    assert abs(mini.grow_gain - (simulate("lru", zipf, 800) - full["lru"])) < 0.03


# -- analyze_tuning_need, dry run, windows -----------------------------------------------


def test_analyze_tuning_need_from_a_dict_a_snapshot_or_the_open_window(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ttl=30.0, tuner={"bounds": TuningBounds(max_ttl=600.0)})
    try:
        quiet = rig.tuner.analyze_tuning_need({"lookups": 5000, "hit_rate": 0.99})
        assert not quiet and quiet.evidence and quiet.reasons == []
        need = rig.tuner.analyze_tuning_need({"lookups": 5000, "expired_miss_rate": 0.3,
                                              "expired_misses": 1500})
        assert need.needed and need.findings[0].change is not None
        assert need.findings[0].change.new == 60.0
        assert "ttl-expiry-misses" in need.reasons[0]
        thin = rig.tuner.analyze_tuning_need({"lookups": 10, "expired_miss_rate": 0.3})
        assert not thin and not thin.evidence and "not enough evidence" in thin.reasons[-1]
        rng = random.Random(1)
        rig.serve(rounds(KEYS, 10, rng))
        live = rig.tuner.analyze_tuning_need()
        assert live.needed and live.metrics["expired_miss_rate"] > 0.5
        # A stored snapshot carries no event stream: expiry misses are estimated.
        snap = rig.analytics.capture_snapshot()
        estimated = rig.tuner.analyze_tuning_need(snap)
        assert estimated.needed and estimated.metrics["expired_miss_rate"] > 0.5
    finally:
        rig.close()


def test_shorter_ttls_need_permission(tmp_path: Path) -> None:
    pressure = {"lookups": 5000, "l2_fill": 0.97, "expired_miss_rate": 0.0}
    rig = make_rig(tmp_path, ttl=600.0)
    try:
        need = rig.tuner.analyze_tuning_need(pressure)
        assert not need and "not allowed" in need.findings[0].blocked
    finally:
        rig.close()
    allowed = make_rig(tmp_path / "b", ttl=600.0,
                       tuner={"bounds": TuningBounds(allow_ttl_decrease=True, min_ttl=300.0)})
    try:
        need = allowed.tuner.analyze_tuning_need(pressure)
        assert need and need.findings[0].change is not None
        assert need.findings[0].change.new == 300.0  # 600 / 2, and the bound
        assert "L2 is 97% full" in need.findings[0].change.reason
    finally:
        allowed.close()


def test_short_windows_keep_collecting_and_forced_ones_are_never_acted_on(
        tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ttl=30.0)
    try:
        rng = random.Random(1)
        rig.serve(rounds(KEYS, 4, rng))  # 480 lookups: balanced wants 1000
        assert rig.tuner.apply_tuning().status == "collecting"
        rig.serve(rounds(KEYS, 5, rng))
        report = rig.tuner.apply_tuning()  # the window kept the first 480 lookups
        assert report.status == "idle" and report.lookups == 1080
        rig.serve(rounds(KEYS, 1, rng))
        forced = rig.tuner.apply_tuning(force=True)
        assert forced.lookups == 120 and forced.need is not None and not forced.need.evidence
        assert rig.tuner.history == []
    finally:
        rig.close()


def test_dry_run_only_recommends(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ttl=30.0, tuner={"dry_run": True})
    try:
        rng = random.Random(7)
        statuses = [rig.window(rounds(KEYS, 10, rng)).status for _ in range(5)]
        assert "recommended" in statuses and "changed" not in statuses
        assert rig.cache.default_ttl == 30.0
        recs = rig.tuner.history
        assert recs and all(d.kind == "recommend" and d.dry_run for d in recs)
        assert recs[0].new == 60.0 and "expired" in recs[0].reason
        assert rig.tuner.get_current_config()["dry_run"] is True
    finally:
        rig.close()


# -- history -----------------------------------------------------------------------------


def test_history_is_persisted_beside_the_analytics_store_with_reasons(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ttl=30.0, tuner={"strategy": "adaptive"})
    rng = random.Random(7)
    for _ in range(3):
        rig.window(rounds(KEYS, 10, rng))
    path = rig.tuner.store.path
    assert path == tmp_path / "cache.tuning.db" == default_history_path(
        tmp_path / "cache.analytics.db")
    config = rig.tuner.get_current_config()
    assert config["default_ttl"] == rig.cache.default_ttl and config["strategy"] == "adaptive"
    rig.close()
    history = TuningHistory(path)
    try:
        decisions = history.decisions()
        assert [d.kind for d in decisions][:2] == ["change", "keep"]
        assert decisions[0].reason and decisions[0].target == "hit_rate"
        assert decisions[1].after > decisions[1].before
        windows = history.windows()
        assert [w["window"] for w in windows] == [1, 2, 3]
        assert windows[0]["config"]["default_ttl"] == decisions[0].new
        assert windows[0]["metrics"]["expired_miss_rate"] > 0.5
        stats = history.load_stats()
        assert stats["increase_ttl"].n >= 1 and stats["increase_ttl"].gain > 0
    finally:
        history.close()


def test_adaptive_learns_from_its_persisted_history(tmp_path: Path) -> None:
    path = tmp_path / "tuning.db"
    seeded = TuningHistory(path)
    seeded.save_stats("increase_ttl", ActionStats(5, -0.04, 0.5), 0.0)
    seeded.close()
    no_explore = Strategy(**{**STRATEGIES["adaptive"].to_dict(), "explore": 0.0})
    rig = make_rig(tmp_path, ttl=30.0,
                   tuner={"strategy": no_explore, "history_path": path})
    try:
        rng = random.Random(7)
        for _ in range(3):
            report = rig.window(rounds(KEYS, 10, rng))
            assert report.need is not None and report.need.needed
        # Its own history says longer TTLs did not pay: it does not exploit that action.
        assert rig.tuner.history == [] and rig.cache.default_ttl == 30.0
    finally:
        rig.close()


# -- chain boundaries and the background thread -------------------------------------------


def test_chain_boundaries_tune_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    rig = make_rig(tmp_path, clock=clock, ttl=30.0, tuner={"interval": 600.0})
    try:
        rng = random.Random(7)
        closed = []
        for i, q in enumerate(rounds(KEYS, 60, rng)):
            rig.serve([q])  # 0.5 s each
            if i % 10 == 9:  # a chain of ten lookups ended
                rig.cache.bus.emit(ChainBoundary("default", "", 0.01))
                closed.append(rig.tuner.brain.window)
        assert closed[-1] == 6  # 7200 lookups in 3600 s: six windows of 600 s
        assert all(b - a <= 1 for a, b in itertools.pairwise(closed))
        assert rig.cache.default_ttl > 30.0  # it acted there
    finally:
        rig.close()


def test_background_thread_tunes_and_stops_cleanly(tmp_path: Path) -> None:
    clock = FakeClock()
    with RagCache(sqlite_path=tmp_path / "c.db", ttl=30.0, clock=clock) as cache:
        tuner = CacheTuner(cache, None, clock=clock, strategy="aggressive",
                           history_path=None)
        rng = random.Random(7)
        for q in rounds(KEYS, 5, rng):
            clock.advance(0.5)
            if cache.lookup(q) is None:
                cache.store(q, "a")
        tuner.start(interval=0.01)
        assert tuner.running
        deadline = time.monotonic() + 60
        while not tuner.history and time.monotonic() < deadline:
            time.sleep(0.01)
        tuner.close()
        assert not tuner.running
        assert tuner.history[0].action == "increase_ttl"
        assert not [t for t in threading.enumerate() if t.name == "rag-cache-tuner"]
        before = cache.bus.active
        assert before is False  # tuner and its private analytics let go of the bus


def test_l1_resize_rebuilds_the_policy_for_the_new_capacity(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, l1_max_entries=100,
                   tuner={"bounds": TuningBounds(max_l1_entries=2000)})
    try:
        rng = random.Random(3)
        keys = [f"q{i}" for i in range(500)]
        for _ in range(3):
            rig.window(uniform(keys, 1500, rng))
        policy = rig.cache.l1.policy
        assert rig.cache.l1.max_entries == 800 and policy._capacity == 800  # type: ignore[attr-defined]
        assert len(policy) == len(rig.cache.l1)  # type: ignore[arg-type]
    finally:
        rig.close()
