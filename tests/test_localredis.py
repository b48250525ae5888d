"""The throwaway Redis servers behind every Redis test: standalone, cluster, sentinel,
the session fixtures and the command-line helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from rag_cache_plugin import _localredis
from rag_cache_plugin._localredis import (
    LocalCluster,
    LocalRedis,
    LocalRedisError,
    LocalSentinel,
    _admin,
    _call,
    _cluster_info,
    _pid_alive,
    free_port,
    local_cluster_down,
    local_cluster_status,
    local_cluster_up,
    standalone,
)

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[1]


def quick(port: int) -> redis.Redis:
    """A client that fails at once instead of retrying: these tests expect failures."""
    return redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def all_gone(pids: list[int | None]) -> bool:
    return eventually(lambda: not any(p is not None and _pid_alive(p) for p in pids))


# ------------------------------------------------------------------- standalone


def test_standalone_start_pause_kill_restart_stop() -> None:
    with LocalRedis() as server:
        assert server.port != 6379
        assert server.url == f"redis://127.0.0.1:{server.port}"
        first_pid, data_dir = server.pid, server.dir
        client = server.client(socket_timeout=1)
        client.set("k", "v")
        assert _call(client, "DEBUG", "SLEEP", "0")  # debug commands are on

        server.pause()
        assert server.paused and server.is_running
        with pytest.raises(redis.TimeoutError):
            quick(server.port).ping()
        server.resume()
        assert client.get("k") == b"v"

        server.kill()
        assert not server.is_running and all_gone([first_pid])
        with pytest.raises(redis.ConnectionError):
            quick(server.port).ping()

        port = server.port
        server.restart()
        assert server.port == port and server.pid != first_pid
        assert quick(port).dbsize() == 0  # restarted empty
        last_pid = server.pid
    assert not server.is_running
    assert all_gone([last_pid])
    assert not data_dir.exists()


def test_extra_args_reach_the_server(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text("user default off\nuser app on >secret ~* &* +@all\n")
    with LocalRedis(extra_args=["--maxmemory", "2mb", "--aclfile", str(acl)]) as server:
        # Started although the default user is locked out: readiness counts NOAUTH.
        with pytest.raises(redis.AuthenticationError):
            quick(server.port).ping()
        client = server.client(username="app", password="secret")
        assert client.config_get("maxmemory") == {"maxmemory": str(2 * 1024 * 1024)}


def test_a_lost_port_race_is_retried_on_another_port(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", free_port()))
    taken.listen()
    busy = taken.getsockname()[1]
    picks = iter([busy])
    real = _localredis.free_port
    # Patched where ``LocalRedis.start`` looks it up.
    monkeypatch.setattr(standalone, "free_port", lambda **kw: next(picks, None) or real(**kw))
    try:
        with LocalRedis() as server:
            assert server.port != busy
            assert server.client().ping()
    finally:
        taken.close()


def test_a_pinned_busy_port_fails_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(LocalRedisError, match=f"port {busy} stayed in use"):
            LocalRedis(port=busy).start()


def test_free_port_leaves_room_for_the_cluster_bus() -> None:
    port = free_port(cluster_bus=True)
    assert port not in (6379, 16379)
    for p in (port, port + 10000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_servers_die_with_a_killed_parent() -> None:
    script = textwrap.dedent("""
        import time
        from rag_cache_plugin._localredis import LocalRedis
        server = LocalRedis().start()
        print(server.pid, server.dir, flush=True)
        time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout is not None
        pid_text, dir_text = child.stdout.readline().split()
        pid = int(pid_text)
        assert _pid_alive(pid)
        child.send_signal(signal.SIGKILL)  # no atexit, no finally: only the watchdog helps
        child.wait()
        assert all_gone([pid])
        assert eventually(lambda: not Path(dir_text).exists())
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A nested pytest run with only our fixtures (the installed plugins cost seconds)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest('pytest_plugins = ["tests.support.servers"]')
    return pytester


def test_fixtures_start_lazily_flush_between_tests_and_stop(inner: pytest.Pytester) -> None:
    record = inner.path / "record.txt"
    running_before = len(_localredis._live)
    inner.makepyfile(f"""
        import redis
        from rag_cache_plugin import _localredis

        def test_no_redis_needed():
            assert len(_localredis._live) == {running_before}  # nothing started yet

        def test_writes(redis_url, redis_server):
            client = redis.Redis.from_url(redis_url)
            client.set("left-behind", 1)
            with open({str(record)!r}, "w") as f:
                f.write(f"{{redis_server.pid}} {{redis_server.port}}")

        def test_sees_an_empty_server(redis_url):
            assert redis.Redis.from_url(redis_url).dbsize() == 0
    """)
    result = inner.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    pid, port = map(int, record.read_text().split())
    assert port != 6379
    assert all_gone([pid])  # stopped at the end of the inner session


def test_a_missing_redis_fails_never_skips(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner.makepyfile("def test_needs_redis(redis_url):\n    pass\n")
    monkeypatch.setenv("PATH", str(inner.path))  # no redis-server there
    result = inner.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*redis-server and redis-cli not found on PATH*never skipped*"])


# ---------------------------------------------------------------------- cluster


@pytest.mark.slow
def test_session_cluster_is_healthy(redis_cluster: LocalCluster) -> None:
    assert len(redis_cluster.primaries) == 3
    assert len(redis_cluster.replicas) == 3
    for primary in redis_cluster.primaries:
        assert len(redis_cluster.replicas_of(primary)) == 1
    for node in redis_cluster.nodes:
        assert node.pid is not None and _pid_alive(node.pid)
        info = _cluster_info(_admin(node.host, node.port))
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_ok"] == "16384"


@pytest.mark.slow
def test_hash_tagged_keys_share_a_slot_and_a_node(
    cluster_url: str, redis_cluster: LocalCluster
) -> None:
    keys = ["ragc:{p42}:a", "ragc:{p42}:b", "ragc:{p42}:c"]
    assert len({redis_cluster.slot_for_key(k) for k in keys}) == 1
    owner = redis_cluster.primary_for_key(keys[0])
    assert all(redis_cluster.primary_for_key(k) is owner for k in keys)
    cluster = RedisCluster.from_url(cluster_url)
    cluster.mset({k: k for k in keys})  # multi-key: only legal within one slot
    direct = owner.client()
    assert direct.mget(keys) == [k.encode() for k in keys]  # no redirect: it lives there
    cluster.close()


@pytest.mark.slow
def test_flushall_empties_every_primary(redis_cluster: LocalCluster) -> None:
    client = redis_cluster.client()
    owners: set[int] = set()
    for i in range(200):
        client.set(f"k{i}", i)
        owners.add(redis_cluster.primary_for_key(f"k{i}").port)
    assert len(owners) == 3
    redis_cluster.flushall()
    assert all(p.client().dbsize() == 0 for p in redis_cluster.primaries)
    client.close()


@pytest.mark.slow
def test_crashed_primary_fails_over_and_rejoins(record_property: Callable[..., None]) -> None:
    cluster = LocalCluster(3, 1, node_timeout_ms=1000).start()
    record_property("cluster_startup_seconds", cluster.startup_seconds)
    root = cluster.nodes[0].server.dir.parent
    try:
        client = RedisCluster.from_url(cluster.url)
        client.set("{t}k", "before")
        victim = cluster.primary_for_key("{t}k")
        (heir,) = cluster.replicas_of(victim)

        # A replica paused for less than the node timeout is no fault at all.
        cluster.pause(heir)
        with pytest.raises(redis.TimeoutError):
            quick(heir.port).ping()
        cluster.resume(heir)
        cluster.wait_ready(10)

        began = time.monotonic()
        cluster.crash(victim, how="segfault")
        assert not victim.is_running
        promoted = cluster.wait_for_failover(victim, timeout=30)
        record_property("failover_seconds", time.monotonic() - began)
        assert promoted is heir and heir.role == "primary"
        assert cluster.primary_for_key("{t}k") is heir
        assert "crashed by signal" in victim.server.log_path.read_text()

        # Usable again through redis-py, both a new client and the one that saw the crash.
        fresh = RedisCluster.from_url(cluster.url)
        fresh.set("{t}k", "after")
        assert fresh.get("{t}k") == b"after"
        client.set("{t}k2", "old-client")
        assert client.get("{t}k2") == b"old-client"

        cluster.restart(victim)  # comes back empty, as a replica of its heir
        assert victim.role == "replica" and victim.primary_id == heir.node_id
        pids = [n.pid for n in cluster.nodes]
        fresh.close()
        client.close()
    finally:
        cluster.stop()
    assert all_gone(pids)
    assert not root.exists()


# --------------------------------------------------------------------- sentinel


@pytest.mark.slow
def test_sentinel_promotes_the_replica() -> None:
    with LocalSentinel(replicas=1, sentinels=3) as setup:
        assert setup.primary is not None
        old_port = setup.primary.port
        master = setup.master_client(socket_timeout=1)
        master.set("k", "v")
        promoted = setup.failover(timeout=30)
        assert promoted.port != old_port and setup.primary is promoted
        master = setup.master_client(socket_timeout=1)
        master.set("k2", "v2")
        assert master.get("k2") == b"v2"
        pids = [s.pid for s in setup.servers]
    assert all_gone(pids)


# ------------------------------------------------------------ command-line helpers


@pytest.mark.slow
def test_local_cluster_up_status_down(tmp_path: Path) -> None:
    base = tmp_path / "lc"
    try:
        info = local_cluster_up(3, 0, base)
        assert (base / "local-cluster.json").exists()
        status = local_cluster_status(base)
        assert status["state"] == "ok" and status["running"]
        assert [n["port"] for n in status["nodes"]] == [n["port"] for n in info["nodes"]]
        with pytest.raises(LocalRedisError, match="still running"):
            local_cluster_up(3, 0, base)
        client = RedisCluster.from_url(info["url"])
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        down = local_cluster_down(base)
    assert sorted(down["stopped"]) == sorted(n["pid"] for n in info["nodes"])
    assert all_gone([n["pid"] for n in info["nodes"]])
    assert local_cluster_status(base)["state"] == "absent"
    assert list(base.iterdir()) == []
    assert local_cluster_down(base)["stopped"] == []  # idempotent
