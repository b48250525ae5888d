"""History that survives a restart, several processes on one host merged from the
SQLite store (real subprocesses), and every host's counters through a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis
from _analytics_helpers import compute

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig
from rag_cache_plugin.analytics import CacheAnalytics, MetricSnapshot, SnapshotStore, read_fleet

ROOT = Path(__file__).resolve().parents[1]
PRICES = {"model-a": (3.0, 15.0)}


def test_history_and_costs_survive_a_restart(tmp_path: Path) -> None:
    db, store = tmp_path / "c.db", tmp_path / "c.analytics.db"
    with RagCache(CacheConfig(sqlite_path=db)) as cache:
        analytics = CacheAnalytics(cache, autostart=False, price_table=PRICES)
        assert analytics.store is not None and analytics.store.path == store  # beside L2
        compute(cache, "q1", "a1", model="model-a", input_tokens=1000, output_tokens=100,
                latency=2.0)
        for _ in range(3):
            cache.lookup("q1")
            analytics.capture_snapshot()
        cache.lookup("q1")
        analytics.close()  # writes the last window
    with RagCache(CacheConfig(sqlite_path=db)) as cache:
        analytics = CacheAnalytics(cache, autostart=False, price_table=PRICES)
        history = analytics.get_metrics_history()
        assert len(history) == 4
        assert [s.hits() for s in history] == [1, 1, 1, 1]
        before = analytics.aggregate()
        assert before.lookups == 5 and before.cost_saved == pytest.approx(4 * 0.0045)
        # A hit on an entry computed before the restart still saves its cost: the
        # cost was persisted with the snapshots.
        hit = cache.lookup("q1")
        assert hit is not None and hit.tier == "l2"
        snap = analytics.capture_snapshot()
        assert snap.cost_saved == pytest.approx(0.0045) and snap.tokens_saved == 1100
        assert analytics.aggregate().lookups == 6
        analytics.close(capture=False)


_WORKER = textwrap.dedent("""
    import sys
    from rag_cache_plugin import CacheConfig, CallCompleted, RagCache, RedisConfig
    from rag_cache_plugin.analytics import CacheAnalytics
    name, hits, db, store, redis_url = sys.argv[1:6]
    config = CacheConfig(sqlite_path=db, redis=RedisConfig(url=redis_url) if redis_url else None)
    with RagCache(config) as cache:
        analytics = CacheAnalytics(cache, autostart=False, store_path=store,
                                   price_table={"model-a": (3.0, 15.0)}, interval=60)
        for i in range(5):
            q = f"{name} question {i}"
            assert cache.lookup(q) is None
            cache.bus.emit(CallCompleted(cache.namespace, "", "llm", 1.0, model="model-a",
                                         input_tokens=1000, output_tokens=100, question=q))
            cache.store(q, i)
        analytics.capture_snapshot()
        for j in range(int(hits)):
            assert cache.lookup(f"{name} question {j % 5}") is not None
        analytics.close()
    print(analytics.proc)
""")


def _run_workers(tmp_path: Path, redis_url: str = "") -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    db, store = tmp_path / "shared.db", tmp_path / "shared.analytics.db"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, name, str(hits), str(db),
                               str(store), redis_url], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for name, hits in (("alpha", 20), ("beta", 35))]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        out.append(stdout.strip())
    return out


def test_two_processes_merge_in_the_store(tmp_path: Path) -> None:
    procs = _run_workers(tmp_path)
    store = SnapshotStore(tmp_path / "shared.analytics.db")
    snaps = store.snapshots()
    assert {s.proc for s in snaps} == set(procs) and len(snaps) == 4
    merged = MetricSnapshot.merge(snaps)
    assert merged.processes == 2
    assert merged.lookups == 10 + 20 + 35 and merged.hits("l1") == 55
    assert merged.tokens_saved == 55 * 1100
    assert merged.cost_saved == pytest.approx(55 * (1000 * 3 + 100 * 15) / 1e6)
    assert merged.count("stores") == 10
    # Per process, too.
    for proc, hits in zip(procs, (20, 35), strict=True):
        assert MetricSnapshot.merge(store.snapshots(proc=proc)).hits() == hits
    # The command line reads the same store.
    run = subprocess.run([sys.executable, "-m", "rag_cache_plugin.cli", "stats", "--json",
                          "--path", str(tmp_path / "shared.analytics.db")],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["processes"] == 2 and data["metrics"]["hits"] == 55
    assert data["metrics"]["cost_saved"] == pytest.approx(merged.cost_saved)
    store.close()


@pytest.mark.redis
def test_processes_publish_to_redis_for_one_fleet_report(tmp_path: Path,
                                                         redis_url: str) -> None:
    procs = _run_workers(tmp_path, redis_url)
    client = redis.Redis.from_url(redis_url)
    fleet = read_fleet(client, "ragc")
    assert {s.proc for s in fleet} == set(procs)
    merged = MetricSnapshot.merge(fleet)
    assert merged.processes == 2 and merged.hits("l1") == 55
    assert merged.cost_saved == pytest.approx(55 * 0.0045)
    for proc in procs:  # a hash per process, with a TTL, under the cache's prefix
        ttl = client.pttl(f"ragc:{{analytics}}:proc:{proc}")
        assert 0 < ttl <= 180_000
    # The command line's live view.
    run = subprocess.run([sys.executable, "-m", "rag_cache_plugin.cli", "stats", "--json",
                          "--redis", redis_url], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["metrics"]["hits"] == 55
    client.close()


@pytest.mark.redis
def test_l3_hits_and_live_fleet_view_with_real_redis(tmp_path: Path, redis_url: str) -> None:
    with RagCache(CacheConfig(redis=RedisConfig(url=redis_url))) as cache:
        analytics = CacheAnalytics(cache, autostart=False, store_path=None,
                                   price_table=PRICES)
        compute(cache, "from redis", "v", model="model-a", input_tokens=10, output_tokens=10,
                latency=0.3)
        cache.l1.clear()
        hit = cache.lookup("from redis")
        assert hit is not None and hit.tier == "l3"
        assert cache.lookup("from redis") is not None  # promoted to L1
        snap = analytics.capture_snapshot()
        assert (snap.hits("l3"), snap.hits("l1"), snap.count("misses")) == (1, 1, 1)
        assert snap.metrics()["l3_p50"] is not None and snap.metrics()["l3_error_rate"] == 0
        assert snap.cost_saved == pytest.approx(2 * (10 * 3 + 10 * 15) / 1e6)
        fleet = analytics.fleet_snapshot()
        assert fleet.processes == 1 and fleet.hits() == 2
        analytics.close(capture=False)


@pytest.mark.redis
def test_publishing_to_a_redis_cluster(cluster_url: str) -> None:
    with RagCache(CacheConfig(redis=RedisConfig(url=cluster_url))) as cache:
        analytics = CacheAnalytics(cache, autostart=False, store_path=None)
        cache.store("q", "v")
        cache.l1.clear()
        assert cache.lookup("q") is not None
        analytics.capture_snapshot()
        fleet = analytics.fleet_snapshot()
        assert fleet.processes == 1 and fleet.hits("l3") == 1 and fleet.count("stores") == 1
        assert analytics.publish_errors == 0
        analytics.close(capture=False)
