"""Access control and transport security of the L3 tier on real servers: the
least-privilege ACL user (standalone and cluster) and TLS with client certificates
(sync and asyncio)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig
from rag_cache_plugin._localredis import LocalCluster, LocalRedis, free_port
from rag_cache_plugin._redisconn import _sentinel_data_kwargs, _sentinel_kwargs
from rag_cache_plugin.redis_ops import CACHE_COMMANDS, RedisClusterManager
from tests.support.tls import make_pki

pytestmark = pytest.mark.redis

USER, PASSWORD = "ragtest", "s3cret-for-tests"


def exercise(cache: RagCache) -> None:
    """Every kind of L3 call the cache makes, through Redis only (L1 is off)."""
    assert cache.store("what is up", {"a": 1}, tags=["doc"], ttl=60)
    assert cache.store("what is down", {"a": 2})
    hit = cache.lookup("what is up")
    assert hit is not None and hit.tier == "l3" and hit.value == {"a": 1}
    assert [h.value for h in cache.lookup_many(["what is up", "what is down"])] == [  # type: ignore[union-attr]
        {"a": 1}, {"a": 2}]
    assert cache.invalidate(tags=["doc"]) == 1
    assert cache.lookup("what is up") is None
    assert cache.news.flush(5)
    cache.clear()
    assert cache.lookup("what is down") is None
    assert all(b.state == "closed" for b in cache.breakers.values())


async def aexercise(cache: RagCache) -> None:
    assert await cache.astore("async question", [1, 2, 3])
    hit = await cache.alookup("async question")
    assert hit is not None and hit.tier == "l3" and hit.value == [1, 2, 3]
    assert (await cache.alookup_many(["async question"]))[0] is not None
    await cache.adelete("async question")
    assert await cache.alookup("async question") is None


def refused(call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except redis.exceptions.NoPermissionError:
        return True
    return False


@pytest.fixture
def acl_user(redis_url: str) -> Iterator[RedisConfig]:
    manager = RedisClusterManager(redis_url)
    result, pw = manager.apply_acl(USER, PASSWORD)
    assert result.ok and pw == PASSWORD
    yield RedisConfig(url=redis_url, username=USER, password=PASSWORD, timeout=2.0)
    with contextlib.closing(redis.Redis.from_url(redis_url)) as admin:
        admin.acl_deluser(USER)


def test_acl_user_works_for_the_cache_standalone(acl_user: RedisConfig) -> None:
    with RagCache(CacheConfig(l1_max_entries=0, redis=acl_user)) as cache:
        exercise(cache)
    user = redis.Redis.from_url(acl_user.url, username=USER, password=PASSWORD)
    with contextlib.closing(user):
        assert user.set("ragc:mine", "1")
        assert refused(lambda: user.get("other:key"))
        assert refused(lambda: user.set("session:1", "x"))
        assert refused(lambda: user.flushall())
        assert refused(lambda: user.config_get("maxmemory"))
        assert refused(lambda: user.keys("*"))
        assert refused(lambda: user.eval("return 1", 0))


async def test_acl_user_works_for_the_cache_async(acl_user: RedisConfig) -> None:
    async with RagCache(CacheConfig(l1_max_entries=0, redis=acl_user)) as cache:
        await aexercise(cache)


def test_acl_user_works_for_the_cache_cluster(redis_cluster: LocalCluster,
                                              cluster_url: str) -> None:
    manager = RedisClusterManager(cluster_url)
    result, _ = manager.apply_acl(USER, PASSWORD)
    assert result.ok and len(result.nodes) == 6  # replicas too: they may be promoted
    try:
        config = RedisConfig(url=cluster_url, username=USER, password=PASSWORD, timeout=2.0)
        with RagCache(CacheConfig(l1_max_entries=0, redis=config)) as cache:
            assert cache.l3.is_cluster  # type: ignore[union-attr]
            exercise(cache)
        user = RedisCluster.from_url(cluster_url, username=USER, password=PASSWORD)
        with contextlib.closing(user):
            assert refused(lambda: user.get("other:key"))
            assert refused(lambda: user.config_get("maxmemory"))
    finally:
        for node in redis_cluster.nodes:
            with contextlib.closing(node.client()) as admin:
                admin.acl_deluser(USER)


def test_acl_rule_is_least_privilege() -> None:
    rule, _ = RedisClusterManager("redis://x:1").acl_rule("u", "pw")
    assert rule.split()[:3] == ["reset", "on", ">pw"]
    assert "~ragc:*" in rule and "~*" not in rule.split() and "+@all" not in rule
    assert "-@all" in rule
    for dangerous in ("flushall", "flushdb", "config", "eval", "keys", "debug", "shutdown"):
        assert f"+{dangerous}" not in rule.split()
    assert set(CACHE_COMMANDS) >= {"get", "set", "mget", "unlink", "xadd", "xread", "scan"}
    _, generated = RedisClusterManager("redis://x:1").acl_rule()
    assert len(generated) >= 24


# ------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRedis, int, Path]]:
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d)
    port = free_port()
    server = LocalRedis(extra_args=[
        "--tls-port", str(port), "--tls-cert-file", str(pki.server_cert),
        "--tls-key-file", str(pki.server_key), "--tls-ca-cert-file", str(pki.ca),
        "--tls-auth-clients", "yes"]).start()
    yield server, port, d
    server.stop()


def tls_config(port: int, d: Path, **kw: object) -> RedisConfig:
    return RedisConfig(url=f"rediss://127.0.0.1:{port}", ssl_ca_certs=str(d / "ca.crt"),
                       ssl_certfile=str(d / "client.crt"), ssl_keyfile=str(d / "client.key"),
                       timeout=2.0, **kw)  # type: ignore[arg-type]


def test_cache_over_tls_with_client_certificate(tls_server: tuple[LocalRedis, int, Path]) -> None:
    _, port, d = tls_server
    with RagCache(CacheConfig(l1_max_entries=0, redis=tls_config(port, d))) as cache:
        exercise(cache)
    # Certificates with a redis:// URL mean TLS as well.
    cfg = tls_config(port, d).model_copy(update={"url": f"redis://127.0.0.1:{port}"})
    with RagCache(CacheConfig(l1_max_entries=0, redis=cfg)) as cache:
        assert cache.store("q", 1) and cache.lookup("q").tier == "l3"  # type: ignore[union-attr]
    # The health report reaches the node over TLS too.
    report = RedisClusterManager(tls_config(port, d)).monitor_cluster()
    assert report.status != "down" and report.nodes[0].latency_ms is not None
    # The TLS port refuses plaintext and clients without a certificate.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_timeout=1).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, ssl=True, ssl_ca_certs=str(d / "ca.crt"), socket_timeout=1).ping()


async def test_cache_over_tls_async(tls_server: tuple[LocalRedis, int, Path]) -> None:
    _, port, d = tls_server
    async with RagCache(CacheConfig(l1_max_entries=0, redis=tls_config(port, d))) as cache:
        await aexercise(cache)


def test_sentinel_connections_carry_credentials_and_tls(tmp_path: Path) -> None:
    cfg = RedisConfig(url="redis://127.0.0.1/2", sentinels=["127.0.0.1:26001", "[::1]:26002"],
                      username="u", password="p", ssl_ca_certs="ca.pem",
                      ssl_certfile="c.pem", ssl_keyfile="k.pem")
    data = _sentinel_data_kwargs(cfg)
    assert data["username"] == "u" and data["password"] == "p" and data["db"] == 2
    assert data["ssl"] is True and data["ssl_ca_certs"] == "ca.pem"
    sentinels = _sentinel_kwargs(cfg)
    assert sentinels["ssl"] is True and "password" not in sentinels
    assert sentinels["retry"].get_retries() == 0
