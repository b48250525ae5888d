"""The tuner on a real RagCache (memory + a real SQLite file) under synthetic
workloads that each have a known better setting.  The clock is injected: windows
advance without sleeping, and every workload is seeded."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from _tuning_helpers import Rig, first_window, make_rig, rounds, scan_heavy, uniform

from rag_cache_plugin.tuning import TuningBounds, TuningRule

KEYS = [f"question {i}" for i in range(120)]


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


# -- TTL too short: entries expire before they are asked for again ----------------------


@pytest.mark.parametrize(("strategy", "max_windows"),
                         [("balanced", 12), ("aggressive", 8), ("adaptive", 12)])
def test_ttl_too_short_is_raised_until_expiry_stops_costing_hits(
        tmp_path: Path, rigs: list[Rig], strategy: str, max_windows: int) -> None:
    # Each question comes back about every 60 s; entries live 30 s.
    rig = make_rig(tmp_path, ttl=30.0, l1_max_entries=1000,
                   tuner={"strategy": strategy, "bounds": TuningBounds(max_ttl=600.0)})
    rigs.append(rig)
    rng = random.Random(7)
    ttls = []
    for _ in range(max_windows):
        rig.window(rounds(KEYS, 10, rng))
        ttls.append(rig.cache.default_ttl)
        assert rig.cache.default_ttl is not None and rig.cache.default_ttl <= 600.0
    first = rig.reports[0].metrics
    assert first["hit_rate"] < 0.15 and first["expired_miss_rate"] > 0.7
    reached = first_window(rig.reports, "hit_rate", 0.85)
    assert reached is not None and reached <= max_windows, ttls
    assert ttls == sorted(ttls) and ttls[-1] >= 480.0
    assert not [d for d in rig.tuner.history if d.kind == "rollback"]
    print(f"{strategy}: hit rate >= 0.85 in window {reached}; TTL path {ttls}")


# -- L1 too small for the working set --------------------------------------------------


@pytest.mark.parametrize(("strategy", "max_windows"), [
    ("conservative", 12), ("balanced", 5), ("aggressive", 4), ("adaptive", 5)])
def test_l1_too_small_grows_to_fit_the_working_set(tmp_path: Path, rigs: list[Rig],
                                                   strategy: str, max_windows: int) -> None:
    rig = make_rig(tmp_path, l1_max_entries=100,
                   tuner={"strategy": strategy, "bounds": TuningBounds(max_l1_entries=2000)})
    rigs.append(rig)
    rng = random.Random(3)
    keys = [f"q{i}" for i in range(500)]
    sizes = []
    for _ in range(max_windows):
        rig.window(uniform(keys, 2000, rng))
        sizes.append(rig.cache.l1.max_entries)
        assert rig.cache.l1.max_entries <= 2000
    assert rig.reports[0].metrics["l1_hit_rate"] < 0.25
    reached = first_window(rig.reports, "l1_hit_rate", 0.95)
    assert reached is not None and reached <= max_windows, sizes
    grew = [d for d in rig.tuner.history if d.action == "increase_l1"]
    assert grew[0].kind == "change" and "shadow simulation" in grew[0].reason
    assert not [d for d in rig.tuner.history if d.kind == "rollback"]
    # The byte bound was not what limited L1, so it was left alone.
    assert rig.cache.l1.max_bytes == rig.cache.config.l1_max_bytes
    print(f"L1 {strategy}: l1 hit rate >= 0.95 in window {reached}; sizes {sizes}")


def test_l1_growth_never_exceeds_a_tight_bound(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = make_rig(tmp_path, l1_max_entries=100,
                   tuner={"bounds": TuningBounds(max_l1_entries=300, max_l1_bytes=64 << 20)})
    rigs.append(rig)
    rng = random.Random(3)
    keys = [f"q{i}" for i in range(500)]
    for _ in range(6):
        rig.window(uniform(keys, 1500, rng))
        assert rig.cache.l1.max_entries <= 300
        assert rig.cache.l1.max_bytes <= 128 << 20  # configured; the bound is lower
    assert rig.cache.l1.max_entries == 300
    assert 0.5 <= rig.reports[-1].metrics["l1_hit_rate"] <= 0.7
    need = rig.tuner.analyze_tuning_need(rig.reports[-1].metrics)
    assert not need.needed  # wants more, but is at its bound
    assert any("bound" in r for r in need.reasons)


# -- a scan-heavy phase that ruins LRU --------------------------------------------------


def test_scans_that_ruin_lru_switch_the_policy_by_shadow_simulation(
        tmp_path: Path, rigs: list[Rig]) -> None:
    rig = make_rig(tmp_path, l1_max_entries=200, l1_policy="lru",
                   tuner={"bounds": TuningBounds(max_l1_entries=200)})
    rigs.append(rig)
    rng = random.Random(5)
    hot = [f"hot {i}" for i in range(150)]
    counter = itertools.count(0, 200)
    for _ in range(5):
        rig.window(scan_heavy(hot, 4, 200, rng, lambda: next(counter)), dt=0.1)
        assert rig.cache.l1.max_entries == 200
    before = rig.reports[0].metrics["l1_hit_rate"]
    assert before < 0.3  # half the lookups are hot keys, yet LRU keeps few of them
    switch = next(d for d in rig.tuner.history if d.action == "switch_policy")
    assert switch.old == "lru" and switch.new in ("tinylfu", "s3fifo")
    assert "shadow simulation" in switch.reason
    shadow = rig.reports[switch.window - 1].shadow
    assert shadow is not None and shadow.policy_gain >= 0.03
    assert rig.cache.l1.policy.name == switch.new
    reached = first_window(rig.reports, "l1_hit_rate", 0.45)  # 0.5 is the ceiling
    assert reached is not None and reached <= 4
    print(f"scan: LRU {before:.3f} -> {switch.new} {rig.reports[-1].metrics['l1_hit_rate']:.3f}"
          f" L1 hits, >= 0.45 in window {reached}")


# -- rebalance: a warm L2 whose hits are never promoted ----------------------------------


def test_hits_served_from_l2_turn_on_promotion_into_l1(tmp_path: Path,
                                                       rigs: list[Rig]) -> None:
    keys = [f"doc {i}" for i in range(300)]
    warm = make_rig(tmp_path)
    warm.serve(keys)
    warm.close()
    # A restarted process: L2 holds every answer, L1 is empty and promotion is off.
    rig = make_rig(tmp_path, promote_to=())
    rigs.append(rig)
    rng = random.Random(11)
    for _ in range(4):
        rig.window(uniform(keys, 1200, rng))
    assert rig.reports[0].metrics["l1_hit_rate"] == 0.0
    assert rig.reports[0].metrics["lower_hit_rate"] == 1.0
    assert rig.cache.promote_to == ("l1",)
    change = next(d for d in rig.tuner.history if d.action == "rebalance")
    assert change.old == [] and change.new == ["l1"]
    reached = first_window(rig.reports, "l1_hit_rate", 0.9)
    assert reached is not None and reached <= 4


# -- adequate performance: nothing to do -------------------------------------------------


@pytest.mark.parametrize("strategy", ["conservative", "balanced", "aggressive", "adaptive"])
def test_adequate_performance_changes_nothing(tmp_path: Path, rigs: list[Rig],
                                              strategy: str) -> None:
    rig = make_rig(tmp_path, ttl=3600.0, l1_max_entries=1000, tuner={"strategy": strategy})
    rigs.append(rig)
    before = rig.tuner.settings()
    rng = random.Random(1)
    for _ in range(6):
        report = rig.window(rounds(KEYS, 20, rng), dt=0.1)
        assert report.status in ("idle", "collecting")
        assert report.need is None or not report.need.needed
    assert rig.reports[-1].metrics["hit_rate"] > 0.95
    assert rig.tuner.history == [] and rig.tuner.settings() == before
    assert rig.tuner.store.decisions() == []
    assert len(rig.tuner.store.windows()) == 6


# -- harmful changes are rolled back and remembered ---------------------------------------


def test_a_change_followed_by_worse_numbers_is_rolled_back_and_not_retried(
        tmp_path: Path, rigs: list[Rig]) -> None:
    rig = make_rig(tmp_path, ttl=30.0, l1_max_entries=1000,
                   tuner={"bounds": TuningBounds(max_ttl=600.0)})
    rigs.append(rig)
    rng = random.Random(7)
    while not rig.tuner.history:
        rig.window(rounds(KEYS, 10, rng))
        assert len(rig.reports) <= 3
    assert rig.cache.default_ttl == 60.0
    # Inject a degradation in the evaluation window: every question is new.
    report = rig.window([f"never seen {i}" for i in range(1200)])
    assert report.status == "rolled_back"
    rollback = report.decisions[-1]
    assert rollback.kind == "rollback" and rollback.action == "increase_ttl"
    assert rollback.after is not None and rollback.before is not None
    assert rollback.after < rollback.before
    assert rig.cache.default_ttl == 30.0
    # The original workload is back and still asks for a longer TTL, but the action
    # is blocked for block_windows (12 for balanced).
    for _ in range(4):
        report = rig.window(rounds(KEYS, 10, rng))
        assert rig.cache.default_ttl == 30.0 and report.status == "idle"
        assert report.need is not None and not report.need.needed
        assert any("rolled back in window" in r for r in report.need.reasons)
    kinds = [d.kind for d in rig.tuner.store.decisions()]
    assert kinds == ["change", "rollback"]


def test_a_harmful_user_rule_is_rolled_back(tmp_path: Path, rigs: list[Rig]) -> None:
    # A rule that shrinks L1 whenever it is nearly full: on this working set it hurts.
    bad = TuningRule(metric="l1_fill", comparison=">=", threshold=0.9, action="decrease_l1",
                     name="shrink-when-full")
    rig = make_rig(tmp_path, l1_max_entries=500,
                   tuner={"rules": [bad], "bounds": TuningBounds(min_l1_entries=50)})
    rigs.append(rig)
    rng = random.Random(9)
    keys = [f"q{i}" for i in range(480)]
    rig.serve(keys)  # warm
    reports = [rig.window(uniform(keys, 1500, rng)) for _ in range(4)]
    assert [r.status for r in reports[:3]] == ["idle", "changed", "rolled_back"]
    change, rollback = rig.tuner.history
    assert change.new["max_entries"] == 250 and rollback.new["max_entries"] == 500
    assert rollback.after < rollback.before - 0.2
    assert rig.cache.l1.max_entries == 500
    assert reports[3].need is not None and not reports[3].need.needed
