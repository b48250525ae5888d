"""``rag_cache_plugin.redis_ops`` and ``rag-cache redis`` on real servers: profiles
applied to every node of a 3-primary/3-replica cluster and read back, health reports
(healthy, full memory), events on the cache's bus, opt-in adjustments, the command."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rag_cache_plugin import (
    CacheConfig,
    EventBus,
    RagCache,
    RedisAdjusted,
    RedisConfig,
    RedisHealth,
)
from rag_cache_plugin._localredis import LocalCluster, LocalRedis
from rag_cache_plugin._redis_ops.profiles import parse_bytes
from rag_cache_plugin.cli import main
from rag_cache_plugin.redis_ops import PROFILES, AutoAdjust, RedisClusterManager, Thresholds

pytestmark = pytest.mark.redis

# PING latency on a loaded 2-core machine says nothing about the code under test.
CALM = Thresholds(latency_ms=10_000)


@pytest.fixture
def restore_config(redis_cluster: LocalCluster) -> Iterator[None]:
    """Put back every setting a test changes on the shared cluster."""
    keys = sorted({k for p in PROFILES.values() for k in p.settings_for("cluster")}
                  | {"maxmemory"})
    before = {}
    for node in redis_cluster.nodes:
        with contextlib.closing(node.client(decode_responses=True)) as c:
            before[node.port] = c.config_get(*keys)
    yield
    for node in redis_cluster.nodes:
        with contextlib.closing(node.client(decode_responses=True)) as c:
            for k, v in before[node.port].items():
                with contextlib.suppress(redis.ResponseError):  # immutable ones
                    c.config_set(k, v)


def test_profile_applied_to_every_cluster_node_and_read_back(
        redis_cluster: LocalCluster, cluster_url: str, restore_config: None) -> None:
    manager = RedisClusterManager(cluster_url)
    topo = manager.initialize_cluster()
    assert topo.mode == "cluster"
    assert len(topo.primaries) == 3 and len(topo.replicas) == 3
    assert topo.slots_covered == 16384
    report = manager.apply_config("cache-lfu", overrides={"maxmemory": "256mb"})
    assert report.ok, report
    assert {n.address for n in report.nodes} == {f"{n.host}:{n.port}"
                                                 for n in redis_cluster.nodes}
    assert {n.role for n in report.nodes} == {"primary", "replica"}
    wanted = PROFILES["cache-lfu"].settings_for("cluster")
    for node in redis_cluster.nodes:  # read back by hand, not through the module
        with contextlib.closing(node.client(decode_responses=True)) as c:
            got = c.config_get(*wanted, "maxmemory")
        assert got["maxmemory-policy"] == "allkeys-lfu"
        assert got["maxmemory"] == str(256 * 1024 * 1024)
        assert got["lazyfree-lazy-eviction"] == "yes"
        assert got["cluster-require-full-coverage"] == "no"
        assert got["save"] == ""
    # io-threads cannot change while the server runs: reported, not silently skipped.
    for n in report.nodes:
        assert n.restart_required["io-threads"] == ("1", "4")
    # Applying again changes nothing.
    again = manager.apply_config("cache-lfu", overrides={"maxmemory": "256mb"})
    assert again.ok and all(not n.applied for n in again.nodes)
    # Switching profile changes only what differs.
    lru = manager.apply_config("cache-lru")
    assert lru.ok and all(set(n.applied) == {"maxmemory-policy"} for n in lru.nodes)


def test_profile_rendering_and_dry_run(redis_url: str) -> None:
    text = RedisClusterManager.render_profile("cache-persistent", {"maxmemory": "1gb"})
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert "maxmemory-policy allkeys-lfu" in lines and "appendonly yes" in lines
    assert "maxmemory 1gb" in lines and "cluster-require-full-coverage no" in lines
    assert all(" #" not in line for line in lines)  # redis.conf has no trailing comments
    assert 'save ""' in RedisClusterManager.render_profile("cache-lfu")
    with pytest.raises(ValueError, match="unknown profile"):
        RedisClusterManager.render_profile("nope")
    dry = RedisClusterManager(redis_url).apply_config("cache-lru", dry_run=True)
    assert dry.dry_run and dry.nodes[0].applied["maxmemory-policy"] == "allkeys-lru"
    with contextlib.closing(redis.Redis.from_url(redis_url, decode_responses=True)) as c:
        assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert parse_bytes("100mb") == 100 * 1024 * 1024 and parse_bytes("1k") == 1000


def test_health_of_a_healthy_cluster(cluster_url: str) -> None:
    bus, seen = EventBus(), []
    bus.subscribe(seen.append, (RedisHealth,))
    manager = RedisClusterManager(cluster_url, bus=bus, thresholds=CALM)
    with contextlib.closing(redis.cluster.RedisCluster.from_url(cluster_url)) as c:
        for i in range(200):
            c.set(f"ragc:x:{{{i}}}", "v")
            c.get(f"ragc:x:{{{i}}}")
            c.get(f"ragc:missing:{{{i}}}")
    report = manager.monitor_cluster()
    assert report.status == "ok", report.problems
    assert report.mode == "cluster" and report.slots_covered == 16384
    assert [n.status for n in report.nodes] == ["ok"] * 6
    assert sorted(n.role for n in report.nodes) == ["primary"] * 3 + ["replica"] * 3
    for n in report.nodes:
        assert n.latency_ms is not None and n.latency_ms < 1000
        assert n.used_memory > 0 and n.clients >= 1
        if n.role == "replica":
            assert n.link == "up" and n.primary and n.lag_bytes is not None
        else:
            assert n.slots > 5000
    assert sum(n.keys for n in report.nodes if n.role == "primary") == 200
    assert report.hit_ratio is not None and 0.3 < report.hit_ratio < 0.7
    assert report.promoted == [] and report.nodes_down == 0
    assert len(seen) == 1
    event = seen[0]
    assert event.status == "ok" and event.nodes == 6 and event.nodes_down == 0
    assert event.slots_uncovered == 0 and event.mode == "cluster"
    assert any("maxmemory" in r.message for r in report.recommendations)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["nodes_down"] == 0 and len(as_json["nodes"]) == 6


def test_health_of_a_full_memory_node(redis_cluster: LocalCluster, cluster_url: str,
                                      restore_config: None) -> None:
    manager = RedisClusterManager(cluster_url, thresholds=CALM)
    manager.initialize_cluster()
    victim = redis_cluster.primaries[0]
    with contextlib.closing(victim.client(decode_responses=True)) as c:
        used = int(c.info("memory")["used_memory"])
        c.config_set("maxmemory-policy", "noeviction")
        c.config_set("maxmemory", str(used + 256 * 1024))
    first, last = _slots(victim)
    tag = next(t for t in map(str, range(100000))
               if first <= redis_cluster.slot_for_key(t) < last)
    with contextlib.closing(victim.client()) as c, pytest.raises(
            redis.exceptions.OutOfMemoryError):
        for i in range(10000):  # one slot of the victim's: no redirects
            c.set(f"ragc:fill:{{{tag}}}:{i}", "x" * 4096)
    report = manager.monitor_cluster()
    node = report.node(f"{victim.host}:{victim.port}")
    assert node.status == "critical"
    assert any("memory full" in p for p in node.problems)
    assert node.memory_ratio >= 0.98 and node.maxmemory_policy == "noeviction"
    assert report.status == "degraded" and report.memory_ratio >= 0.98
    advice = [r for r in report.recommendations if r.setting == "maxmemory-policy"]
    assert advice and advice[0].severity == "critical" and advice[0].value == "allkeys-lfu"
    others = [n for n in report.nodes if n.address != node.address and n.role == "primary"]
    assert all(n.status == "ok" for n in others)


def _slots(node: object) -> tuple[int, int]:
    from rag_cache_plugin._localredis import _admin, _cluster_nodes

    with contextlib.closing(_admin(node.host, node.port)) as c:  # type: ignore[attr-defined]
        seen = _cluster_nodes(c)
    first, last = next(s for s in seen.values() if s.port == node.port).slots[0]  # type: ignore[attr-defined]
    return first, last + 1


def test_health_standalone_with_replica_and_monitor_thread() -> None:
    with LocalRedis() as primary, LocalRedis(
            extra_args=["--replicaof", "127.0.0.1", "0"]) as replica:
        with contextlib.closing(replica.client()) as c:
            c.replicaof("127.0.0.1", primary.port)
        bus, seen = EventBus(), []
        bus.subscribe(seen.append, (RedisHealth,))
        with RedisClusterManager(primary.url, bus=bus) as manager:
            topo = manager.initialize_cluster()
            assert topo.mode == "standalone" and [n.role for n in topo.nodes] == [
                "primary", "replica"]
            manager.start_monitor(interval=0.2)
            deadline = time.monotonic() + 15
            while len(seen) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            manager.stop_monitor()
        assert len(seen) >= 3
        assert seen[-1].nodes == 2 and seen[-1].status in ("ok", "degraded")
        replica.kill()
        report = RedisClusterManager(primary.url).monitor_cluster()
        assert report.nodes[0].status != "down"


def test_auto_adjust_switches_a_full_noeviction_server_to_lfu() -> None:
    with LocalRedis(extra_args=["--maxmemory-policy", "noeviction"]) as server:
        with contextlib.closing(server.client(decode_responses=True)) as c:
            used = int(c.info("memory")["used_memory"])
            c.config_set("maxmemory", str(used + 128 * 1024))
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                for i in range(10000):
                    c.set(f"k{i}", "x" * 4096)
        bus, adjusted = EventBus(), []
        bus.subscribe(adjusted.append, (RedisAdjusted,))
        observer = RedisClusterManager(server.url)
        assert observer.monitor_cluster().adjustments == []  # off unless asked
        manager = RedisClusterManager(server.url, bus=bus,
                                      auto_adjust=AutoAdjust(max_maxmemory="64mb"))
        report = manager.monitor_cluster()
        assert [(a["setting"], a["new"], a["result"]) for a in report.adjustments] == [
            ("maxmemory-policy", "allkeys-lfu", "done")]
        assert manager.adjustments == report.adjustments
        assert len(adjusted) == 1 and adjusted[0].new == "allkeys-lfu"
        with contextlib.closing(server.client(decode_responses=True)) as c:
            assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lfu"
            assert c.set("now", "fits")  # evicts instead of refusing


def test_auto_adjust_raises_maxmemory_when_evictions_rise_and_hits_fall() -> None:
    with LocalRedis(extra_args=["--maxmemory-policy", "allkeys-lru"]) as server:
        c = server.client()
        used = int(c.info("memory")["used_memory"])
        limit = used + 2 * 1024 * 1024
        c.config_set("maxmemory", str(limit))
        manager = RedisClusterManager(server.url, auto_adjust=AutoAdjust(
            max_maxmemory=limit * 2, allow_policy_switch=False))
        for i in range(100):  # a working set that fits: every read hits
            c.set(f"hot{i}", "x" * 1000)
        for _ in range(3):
            for i in range(100):
                c.get(f"hot{i}")
        first = manager.monitor_cluster()
        assert first.adjustments == [] and first.hit_ratio == 1.0
        for i in range(6000):  # a flood that evicts the working set: reads miss
            c.set(f"cold{i}", "y" * 1000)
        for i in range(100):
            c.get(f"hot{i}")
        second = manager.monitor_cluster()
        assert second.evicted_keys > 0 and second.hit_ratio is not None
        assert second.hit_ratio < first.hit_ratio
        assert any("evictions rising" in r.message for r in second.recommendations)
        assert [(a["setting"], a["old"], a["new"]) for a in second.adjustments] == [
            ("maxmemory", str(limit), str(int(limit * 1.25)))]
        assert int(c.config_get("maxmemory")["maxmemory"]) == int(limit * 1.25)
        c.close()


def test_manager_for_cache_reports_onto_the_cache_bus(redis_url: str) -> None:
    with RagCache(CacheConfig(redis=RedisConfig(url=redis_url))) as cache:
        seen: list[object] = []
        cache.bus.subscribe(seen.append, (RedisHealth,))
        RedisClusterManager.for_cache(cache).monitor_cluster()
        assert len(seen) == 1
    with pytest.raises(ValueError):
        RedisClusterManager.for_cache(RagCache())


def test_unreachable_redis_is_reported_down() -> None:
    server = LocalRedis().start()
    manager = RedisClusterManager(RedisConfig(url=server.url, cluster=False), timeout=0.3)
    manager.initialize_cluster()
    server.stop()
    report = manager.monitor_cluster()
    assert report.status == "down" and report.nodes_down == 1


# ------------------------------------------------------------------- the command


def test_cli_profile_show_list_apply(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["redis", "profile", "show", "cache-lru", "--set", "maxmemory=1gb"]) == 0
    out = capsys.readouterr().out
    assert "maxmemory-policy allkeys-lru" in out and "maxmemory 1gb" in out
    assert main(["redis", "profile", "list"]) == 0
    assert "cache-persistent" in capsys.readouterr().out
    assert main(["redis", "profile", "apply", "cache-lfu", "--url", redis_url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)  # io-threads needs a restart...
    assert data["nodes"][0]["restart_required"]["io-threads"] == ["1", "4"]
    assert data["nodes"][0]["verified"] is True  # ...but every runtime setting took
    with contextlib.closing(redis.Redis.from_url(redis_url, decode_responses=True)) as c:
        assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lfu"
        c.config_set("maxmemory-policy", "noeviction")


def test_cli_health(cluster_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 0 when ok; 1 (degraded) only if this busy machine made a PING slow.
    assert main(["redis", "health", "--url", cluster_url, "--json"]) in (0, 1)
    data = json.loads(capsys.readouterr().out)
    assert data["nodes_down"] == 0 and len(data["nodes"]) == 6
    assert all(n["status"] in ("ok", "warning") for n in data["nodes"])
    assert main(["redis", "health", "--url", cluster_url]) in (0, 1)
    out = capsys.readouterr().out
    assert "cluster" in out and "primary" in out and "replica" in out


def test_cli_acl(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["redis", "acl", "--user", "clitest", "--password", "pw1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ACL SETUSER clitest reset on >pw1 ~ragc:*")
    assert main(["redis", "acl", "--apply", "--url", redis_url, "--user", "clitest",
                 "--password", "pw1"]) == 0
    assert ": ok" in capsys.readouterr().out
    with contextlib.closing(redis.Redis.from_url(redis_url, username="clitest",
                                                 password="pw1")) as c:
        assert c.ping()
    with contextlib.closing(redis.Redis.from_url(redis_url)) as admin:
        admin.acl_deluser("clitest")


def test_cli_local_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    d = str(tmp_path / "lc")
    monkeypatch.delenv("RAG_CACHE_REDIS_URL", raising=False)
    try:
        assert main(["redis", "local-cluster", "up", "--replicas", "0", "--dir", d]) == 0
        assert "cluster up: redis://127.0.0.1:" in capsys.readouterr().out
        assert main(["redis", "local-cluster", "status", "--dir", d, "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["state"] == "ok" and len(status["nodes"]) == 3
        # Without --url the other actions find the local cluster.
        assert main(["redis", "health", "--dir", d, "--json"]) in (0, 1)
        assert json.loads(capsys.readouterr().out)["mode"] == "cluster"
    finally:
        assert main(["redis", "local-cluster", "down", "--dir", d]) == 0
    assert "stopped 3 node(s)" in capsys.readouterr().out
    assert main(["redis", "local-cluster", "status", "--dir", d]) == 0
    assert capsys.readouterr().out.startswith("absent")


def test_cli_unreachable_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    server = LocalRedis().start()
    url = server.url
    server.stop()
    assert main(["redis", "health", "--url", url]) == 2
    assert "down" in capsys.readouterr().out
    assert main(["redis", "profile", "apply", "--url", url]) == 2
    assert "rag-cache redis:" in capsys.readouterr().err
