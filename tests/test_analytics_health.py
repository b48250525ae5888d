"""Alerts on crafted metric sequences (fire, clear, no flapping), and the health
score and recommendations of a real RagCache under degraded conditions: Redis
down, a tiny L1, many false-hit reports."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from _analytics_helpers import AliasSemantic, compute

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig
from rag_cache_plugin.analytics import (
    DEFAULT_RULES,
    AlertEvent,
    AlertManager,
    AlertRule,
    CacheAnalytics,
    Severity,
)


def states(events: list[AlertEvent]) -> list[tuple[str, str]]:
    return [(e.rule, e.state) for e in events]


# -- alerts -------------------------------------------------------------------------


def test_alert_fires_and_clears_with_hysteresis(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[AlertEvent] = []
    rule = AlertRule("low", "hit_rate", "<", 0.10, "critical", clear_threshold=0.15,
                     for_count=2, clear_count=2, min_lookups=20)
    mgr = AlertManager([rule], hooks=[seen.append])
    sequence = [0.50, 0.05, 0.40, 0.05, 0.05, 0.12, 0.20, 0.09, 0.20, 0.20, 0.20]
    fired_at, cleared_at = [], []
    with caplog.at_level(logging.INFO, logger="rag_cache_plugin.analytics"):
        for i, hr in enumerate(sequence):
            for ev in mgr.evaluate({"hit_rate": hr, "lookups": 100}, ts=float(i)):
                (fired_at if ev.state == "fired" else cleared_at).append(i)
    # One bad window is not enough (for_count=2); 0.12 is inside the band; 0.09 resets
    # the clearing streak; two windows at or above 0.15 clear it.
    assert fired_at == [4] and cleared_at == [9]
    assert [(e.state, e.severity) for e in seen] == [("fired", Severity.CRITICAL),
                                                     ("cleared", Severity.CRITICAL)]
    assert any(r.levelno == logging.CRITICAL and "low fired" in r.getMessage()
               for r in caplog.records)
    assert any("low cleared" in r.getMessage() for r in caplog.records)


def test_a_value_wobbling_around_the_threshold_does_not_flap() -> None:
    mgr = AlertManager([r for r in DEFAULT_RULES if r.name == "l1_memory_high"])
    events = []
    for i in range(40):
        events += mgr.evaluate({"l1_memory_ratio": 0.79 if i % 2 else 0.81, "lookups": 5},
                               ts=float(i))
    assert states(events) == [("l1_memory_high", "fired")]
    assert [a.rule for a in mgr.active()] == ["l1_memory_high"]


def test_idle_windows_change_nothing_and_rising_rules_compare_windows() -> None:
    mgr = AlertManager(list(DEFAULT_RULES))
    # Fewer lookups than min_lookups: the hit-rate rules ignore the window.
    assert mgr.evaluate({"hit_rate": 0.0, "lookups": 3}) == []
    events = []
    for reports in (0, 1, 3, 6, 6, 6):  # rising twice, then flat twice
        events += mgr.evaluate({"false_hit_reports": reports, "lookups": 0})
    assert states(events) == [("false_hits_rising", "fired"), ("false_hits_rising", "cleared")]


def test_rules_are_data() -> None:
    rule = AlertRule.from_dict({"name": "slow", "metric": "model_p95", "op": ">",
                                "threshold": 5.0, "severity": "warning"})
    assert AlertRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(ValueError, match="unknown metric"):
        AlertRule("x", "hit_rat", "<", 0.1)
    with pytest.raises(ValueError, match="safe side"):
        AlertRule("x", "hit_rate", "<", 0.1, clear_threshold=0.05)
    mgr = AlertManager()
    mgr.set_rules([rule.to_dict()])
    assert [r.name for r in mgr.rules] == ["slow"]


def test_critical_alert_from_a_real_cache(tmp_path: Path) -> None:
    fired: list[AlertEvent] = []
    with RagCache(CacheConfig()) as cache:
        analytics = CacheAnalytics(cache, autostart=False, store_path=tmp_path / "a.db",
                                   alert_hooks=[fired.append])
        for window in range(3):
            for i in range(30):
                cache.lookup(f"never cached {window} {i}")
            analytics.capture_snapshot()
        assert {"hit_rate_critical", "hit_rate_low"} <= {e.rule for e in fired}
        assert {a.rule for a in analytics.get_active_alerts()} >= {"hit_rate_critical"}
        stored = analytics.store.alerts() if analytics.store else []
        assert {a["rule"] for a in stored if a["state"] == "fired"} >= {"hit_rate_critical"}
        analytics.close()


# -- health and recommendations ---------------------------------------------------------


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _warm(cache: RagCache, n: int) -> None:
    for i in range(n):
        compute(cache, f"question {i}", f"answer {i}", model="gpt-4o", input_tokens=100,
                output_tokens=50, latency=0.5)


def test_healthy_cache_scores_full(tmp_path: Path) -> None:
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db")) as cache:
        analytics = CacheAnalytics(cache, autostart=False, store_path=None)
        _warm(cache, 10)
        for _ in range(5):
            for i in range(10):
                cache.lookup(f"question {i}")
        health = analytics.calculate_health_score()
        assert health.score == 100 and health.status == "healthy"
        assert [f.name for f in health.breakdown] == [
            "hit_rate", "availability", "l1_pressure", "false_hits", "latency"]
        assert sum(f.weight for f in health.breakdown) == 100
        assert analytics.get_recommendations() == []
        analytics.close()


def test_redis_down_costs_points_and_says_fix_redis() -> None:
    port = _closed_port()
    config = CacheConfig(redis=RedisConfig(url=f"redis://127.0.0.1:{port}/0", timeout=0.05,
                                           connect_timeout=0.05, breaker_threshold=3,
                                           breaker_reset=60))
    with RagCache(config) as cache:
        analytics = CacheAnalytics(cache, autostart=False, store_path=None, redis_publish=False)
        _warm(cache, 10)
        for _ in range(3):
            for i in range(10):
                cache.lookup(f"question {i}")
        snap = analytics.capture_snapshot()
        assert snap.count("failures.l3") >= 3 and snap.gauges["l3_breaker_open"] == 1
        assert "l3" in snap.last_errors
        health = analytics.calculate_health_score()
        availability = {f.name: f for f in health.breakdown}["availability"]
        assert availability.lost == 25 and "l3" in availability.detail
        assert health.score <= 75
        recs = analytics.get_recommendations()
        assert recs[0].action == "Fix Redis errors (L3)" and recs[0].priority == "high"
        assert "circuit breaker is open" in recs[0].reason
        assert "l3_unavailable" in {a.rule for a in analytics.get_active_alerts()}
        analytics.close(capture=False)


def test_tiny_l1_says_raise_l1_size(tmp_path: Path) -> None:
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db", l1_max_entries=5)) as cache:
        analytics = CacheAnalytics(cache, autostart=False, store_path=None)
        _warm(cache, 40)
        for _ in range(2):
            for i in range(40):
                assert cache.lookup(f"question {i}") is not None  # mostly from L2
        snap = analytics.recent()
        assert snap.count("evictions.l1") >= 35 and snap.hits("l2") > 40
        health = analytics.calculate_health_score(snap)
        pressure = {f.name: f for f in health.breakdown}["l1_pressure"]
        assert pressure.lost == 15
        rec = next(r for r in analytics.get_recommendations(snap)
                   if r.action == "Raise the L1 size")
        assert (rec.setting, rec.current, rec.suggested) == ("l1_max_entries", 5, 20)
        analytics.close(capture=False)


def test_false_hit_reports_cost_points_and_say_tighten(tmp_path: Path) -> None:
    with RagCache(CacheConfig()) as cache:
        cache.semantic = AliasSemantic(cache, {f"paraphrase {i}": f"question {i}"
                                               for i in range(20)})
        analytics = CacheAnalytics(cache, autostart=False, store_path=None)
        _warm(cache, 20)
        for i in range(20):
            hit = cache.lookup(f"paraphrase {i}")
            assert hit is not None and hit.kind == "semantic"
            if i % 4 == 0:
                cache.feedback(hit, correct=False)
            else:
                cache.feedback(hit, correct=True)
        snap = analytics.capture_snapshot()
        assert snap.false_hit_reports == 5 and snap.count("feedback.semantic.ok") == 15
        assert snap.metrics()["false_hit_rate"] == pytest.approx(0.25)
        health = analytics.calculate_health_score()
        assert {f.name: f for f in health.breakdown}["false_hits"].lost == 15
        assert any(r.action == "Tighten semantic matching"
                   for r in analytics.get_recommendations())
        assert "false_hit_rate_high" in {a.rule for a in analytics.get_active_alerts()}
        analytics.close(capture=False)


def test_recommends_warming_ttl_and_semantic(tmp_path: Path) -> None:
    now = [1000.0]
    with RagCache(CacheConfig(ttl=10), clock=lambda: now[0]) as cache:
        analytics = CacheAnalytics(cache, autostart=False, store_path=None)
        _warm(cache, 10)
        now[0] += 60  # everything expired
        for _ in range(3):
            for i in range(10):
                cache.lookup(f"question {i}")
        recs = {r.action: r for r in analytics.get_recommendations()}
        assert recs["Lengthen the TTL"].suggested == 20
        assert "Enable semantic matching" in recs
        assert set(recs["Warm these questions"].questions) == {f"question {i}" for i in range(10)}
        assert analytics.get_top_missed_questions(1)[0][1] == 4
        analytics.close(capture=False)
