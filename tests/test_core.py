"""RagCache across the tiers: keys, partitions, TTL, promotion, invalidation,
corrupt payloads, events and argument validation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rag_cache_plugin import (
    CacheConfig,
    CacheHit,
    ConfigError,
    Corrupt,
    EventBus,
    Hit,
    Miss,
    RagCache,
    RedisConfig,
    Stored,
)


@pytest.fixture
def full(tmp_path: Path, redis_url: str) -> Iterator[RagCache]:
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url))
    with RagCache(cfg) as c:
        yield c


def wait_until(cond: object, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


# -- keys ---------------------------------------------------------------------------


def test_lexical_variants_share_a_key() -> None:
    with RagCache(CacheConfig()) as c:
        c.store("What is the capital of France?", "Paris")
        fullwidth = "\uff37\uff28\uff21\uff34 is the capital of France?"
        for q in ["what is the capital of france", "  What   is the Capital of FRANCE ?!",
                  "What is the capital of France\u2009?", fullwidth]:
            hit = c.lookup(q)
            assert hit is not None and hit.value == "Paris", q


@pytest.mark.parametrize(
    ("cached", "other"),
    [("What is C++?", "What is C?"), ("What is 1 + 1?", "What is 1 - 1?"),
     ("Is it -5 degrees?", "Is it 5 degrees?"), ("Who is not coming?", "Who is coming?"),
     ("price in $", "price in €"), ("node.js vs nodejs", "node js vs nodejs")],
)
def test_canonicalization_never_drops_meaning(cached: str, other: str) -> None:
    with RagCache(CacheConfig()) as c:
        c.store(cached, "A")
        assert c.lookup(other) is None


def test_partitions_never_cross() -> None:
    with RagCache(CacheConfig()) as c:
        c.store("q", "base", context="system: be brief", llm_string="gpt-x t=0")
        assert c.lookup("q", context="system: be brief", llm_string="gpt-x t=0") is not None
        assert c.lookup("q", context="system: be verbose", llm_string="gpt-x t=0") is None
        assert c.lookup("q", context="system: be brief", llm_string="gpt-x t=1") is None
        assert c.lookup("q", context="system: be brief", llm_string="gpt-x t=0",
                        namespace="tenant-2") is None
        # Structured context is serialized canonically (key order does not matter).
        c.store("q2", "v", context={"a": 1, "b": [1, 2]})
        assert c.lookup("q2", context={"b": [1, 2], "a": 1}) is not None


def test_keyed_hash_changes_keys() -> None:
    with RagCache(CacheConfig()) as a, RagCache(CacheConfig(key_secret="s3cret")) as b:
        assert a.ref("q").key != b.ref("q").key
        assert len(a.ref("q").key) == 32


# -- TTL and promotion ----------------------------------------------------------------


def test_ttl_expires_in_every_tier(full: RagCache) -> None:
    full.store("short", "v", ttl=1.0)  # long enough to survive a stalled machine
    full.store("long", "v", ttl=60)
    tiers = [full.l1, full.l2, full.l3]
    for q in ("short", "long"):
        assert all(t.get(full.ref(q), time.time()) is not None for t in tiers)  # type: ignore[union-attr]
    time.sleep(1.15)
    assert [t.get(full.ref("short"), time.time()) for t in tiers] == [None, None, None]  # type: ignore[union-attr]
    assert full.lookup("short") is None
    assert full.lookup("long") is not None


def test_promotion_keeps_remaining_ttl(tmp_path: Path, redis_url: str) -> None:
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url))
    with RagCache(CacheConfig(redis=RedisConfig(url=redis_url))) as writer:
        writer.store("q", {"v": 1}, ttl=30)
    time.sleep(0.2)
    with RagCache(cfg) as reader:
        hit = reader.lookup("q")
        assert hit is not None and hit.tier == "l3"
        ref = reader.ref("q")
        in_l1 = reader.l1.get(ref, time.time())
        in_l2 = reader.l2.get(ref, time.time())  # type: ignore[union-attr]
        assert in_l1 is not None and in_l2 is not None
        assert in_l1.expires == hit.expires == in_l2.expires
        assert 29.0 < in_l2.expires - time.time() < 29.9  # type: ignore[operator]
        assert reader.lookup("q").tier == "l1"  # type: ignore[union-attr]


# -- invalidation -------------------------------------------------------------------


def test_invalidate_across_tiers_and_instances(tmp_path: Path, redis_url: str) -> None:
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url),
                      news_poll_interval=0.05)
    with RagCache(cfg) as a, RagCache(cfg) as b:
        a.store("q1", "v1", tags=["doc1"])
        a.store("q2", "v2", tags=["doc1", "doc2"])
        a.store("q3", "v3", tags=["doc2"])
        assert b.lookup("q1").tier == "l2"  # type: ignore[union-attr]
        assert b.lookup("q1").tier == "l1"  # type: ignore[union-attr]
        assert b.lookup("q3") is not None
        assert a.invalidate(tags=["doc1"]) == 2
        for c in (a, b):
            assert c.l2.get(c.ref("q1"), time.time()) is None  # type: ignore[union-attr]
            assert c.l3.get(c.ref("q2"), time.time()) is None  # type: ignore[union-attr]
        # b had q1 in its own L1: the news feed removes it.
        assert wait_until(lambda: b.lookup("q1") is None)
        assert b.lookup("q2") is None
        assert b.lookup("q3").value == "v3"  # type: ignore[union-attr]


def test_clear_reaches_peers(tmp_path: Path, redis_url: str) -> None:
    cfg = CacheConfig(redis=RedisConfig(url=redis_url), news_poll_interval=0.05)
    with RagCache(cfg) as a, RagCache(cfg) as b:
        a.store("q", "v")
        assert b.lookup("q") is not None and b.lookup("q").tier == "l1"  # type: ignore[union-attr]
        a.clear()
        assert wait_until(lambda: b.lookup("q") is None)


def test_overwrite_reaches_peers(redis_url: str) -> None:
    cfg = CacheConfig(redis=RedisConfig(url=redis_url), news_poll_interval=0.05)
    with RagCache(cfg) as a, RagCache(cfg) as b:
        a.store("q", "old")
        assert b.lookup("q").value == "old"  # type: ignore[union-attr]
        a.store("q", "new")
        assert wait_until(lambda: b.lookup("q").value == "new")  # type: ignore[union-attr]


def test_l2_wal_is_checkpointed_in_the_background(tmp_path: Path) -> None:
    """Stores do not pay for WAL checkpoints: the news thread runs them each round, so
    the WAL stays small although SQLite's own checkpoint would wait for 40 MB."""
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db", l1_max_entries=0,
                      news_poll_interval=0.02)
    wal = tmp_path / "c.db-wal"
    with RagCache(cfg) as cache:
        largest = 0
        for i in range(300):  # 15 MB of entries
            assert cache.store(f"question {i}", "x" * 50_000)
            if i % 20 == 19:
                time.sleep(0.1)  # rounds of the news thread
                largest = max(largest, wal.stat().st_size)
        assert largest < 6_000_000, largest
        assert cache.lookup("question 0") is not None


def test_l3_reads_keep_connections_only_while_their_pool_lives(redis_url: str) -> None:
    """Fast reads keep connections checked out of redis-py's pool; a closed client's pool
    is still freed, and a forked child opens its own connections."""
    import gc
    import os
    import weakref

    from rag_cache_plugin._tiers._redis_direct import _raw, _spares

    pools = []
    for _ in range(3):
        client = redis.Redis.from_url(redis_url)
        _raw(client, "SET", "rc-direct", "1")
        assert _raw(client, "GET", "rc-direct") == b"1"
        kept = _spares(client.connection_pool)
        assert kept is not None and len(kept) == 1
        pools.append(weakref.ref(client.connection_pool))
        client.close()
        del client, kept
    gc.collect()
    assert all(p() is None for p in pools)
    client = redis.Redis.from_url(redis_url)
    _raw(client, "GET", "rc-direct")
    parents = list(_spares(client.connection_pool) or [])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no connection of the parent's, and reads still work
        try:
            ok = not _spares(client.connection_pool) and _raw(client, "GET", "rc-direct") == b"1"
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert _spares(client.connection_pool) == parents
    assert _raw(client, "GET", "rc-direct") == b"1"  # the parent's socket was not disturbed
    client.close()


# -- corrupt payloads through the cache ------------------------------------------------


def test_corrupt_l2_row_and_l3_value(full: RagCache) -> None:
    seen: list[object] = []
    full.bus.subscribe(seen.append)
    full.store("q", "v")
    ref = full.ref("q")
    with full.l2._write() as conn:  # type: ignore[union-attr]
        conn.execute("UPDATE entries SET value = x'deadbeef' WHERE key = ?", (ref.key,))
    full.l3.client.set(full.l3.data_key(ref), b"RC1 -\n{not json")  # type: ignore[union-attr]
    full.l1.clear()
    assert full.lookup("q") is None
    assert [e.tier for e in seen if isinstance(e, Corrupt)] == ["l2", "l3"]  # type: ignore[attr-defined]
    assert full.l3.client.get(full.l3.data_key(ref)) is None  # type: ignore[union-attr]
    assert full.l2._conn().execute("SELECT count(*) FROM entries").fetchone()[0] == 0  # type: ignore[union-attr]


def test_signed_entries_reject_tampering(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with RagCache(CacheConfig(sqlite_path=path, signing_keys=["k-old"])) as old:
        old.store("q", "v")
        old.store("q2", "v2")
    seen: list[object] = []
    bus = EventBus()
    bus.subscribe(seen.append)
    # Rotation: the new key signs, the old key still verifies.
    with RagCache(CacheConfig(sqlite_path=path, signing_keys=["k-new", "k-old"]), bus=bus) as c:
        assert c.lookup("q").value == "v"  # type: ignore[union-attr]
        ref = c.ref("q2")
        with c.l2._write() as conn:  # type: ignore[union-attr]
            raw = conn.execute("SELECT value FROM entries WHERE key=?", (ref.key,)).fetchone()[0]
            conn.execute("UPDATE entries SET value=? WHERE key=?",
                         (raw.replace(b'"v2"', b'"xx"'), ref.key))
        assert c.lookup("q2") is None
        assert any(isinstance(e, Corrupt) and "signature" in e.reason for e in seen)  # type: ignore[attr-defined]
    with RagCache(CacheConfig(sqlite_path=path, signing_keys=["k-other"])) as stranger:
        assert stranger.lookup("q") is None


# -- failures ---------------------------------------------------------------------------


def test_unreachable_redis_is_a_miss_and_the_breaker_opens() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    bus, failures = EventBus(), []
    bus.subscribe(failures.append)
    cfg = CacheConfig(redis=RedisConfig(url=f"redis://127.0.0.1:{port}", timeout=0.1,
                                        breaker_threshold=3, breaker_reset=60))
    with RagCache(cfg, bus=bus) as c:
        assert c.store("q", "v") is True  # L1 took it
        c.l1.clear()
        assert c.lookup("q") is None  # its failed write awaits repair: L3 is not asked
        for i in range(5):
            assert c.lookup(f"q{i}") is None  # these reach L3 and trip its breaker
        assert c.breakers["l3"].state == "open"
        t = time.perf_counter()
        for _ in range(100):
            c.lookup("other")
        per_lookup = (time.perf_counter() - t) / 100
        assert per_lookup < 0.001, per_lookup


# -- events and batches ---------------------------------------------------------------


def test_events_describe_what_happened(full: RagCache) -> None:
    seen: list[object] = []
    full.bus.subscribe(seen.append)
    full.lookup("q")
    full.store("q", "v")
    full.lookup("q")
    full.l1.clear()
    full.lookup("q")
    kinds = [(type(e).__name__, getattr(e, "tier", None)) for e in seen
             if isinstance(e, Hit | Miss | Stored)]
    assert kinds == [("Miss", None), ("Stored", None), ("Hit", "l1"), ("Hit", "l2")]
    stored = next(e for e in seen if isinstance(e, Stored))
    assert stored.tiers == ("l1", "l2", "l3")


def test_lookup_many(full: RagCache) -> None:
    full.store("a", 1)
    full.store("b", 2)
    full.l1.clear()
    hits = full.lookup_many(["a", "x", "b"])
    assert [h.value if h else None for h in hits] == [1, None, 2]
    assert [h.tier if h else None for h in hits] == ["l2", None, "l2"]


async def test_async_paths(full: RagCache) -> None:
    assert await full.alookup("q") is None
    assert await full.astore("q", {"a": 1}, tags=["t"])
    full.l1.clear()
    full.l2.clear()  # type: ignore[union-attr]
    hit = await full.alookup("q")
    assert hit is not None and hit.tier == "l3"
    hits = await full.alookup_many(["q", "zz"])
    assert hits[0] is not None and hits[1] is None
    results = await asyncio.gather(*(full.astore(f"q{i}", i) for i in range(20)))
    assert all(results)
    assert await full.ainvalidate(tags=["t"]) == 1
    await full.adelete("q5")
    assert await full.alookup("q5") is None
    await full.aclear()
    assert await full.alookup("q7") is None


# -- validation -------------------------------------------------------------------------


def test_api_misuse_is_a_value_error() -> None:
    with RagCache(CacheConfig()) as c:
        with pytest.raises(ValueError):
            c.store("q", object())
        with pytest.raises(ValueError):
            c.store("q", "v", tags="doc1")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            c.store("q", "v", ttl=-1)
        with pytest.raises(ValueError):
            c.lookup(b"bytes")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            c.lookup("q", namespace="")
        with pytest.raises(ValueError):
            c.feedback("not a hit", correct=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        CacheConfig(l1_max_entries=-1)
    with pytest.raises(ValueError):
        RedisConfig(url="http://x")


def test_limits_are_events_not_crashes() -> None:
    seen: list[object] = []
    bus = EventBus()
    bus.subscribe(seen.append)
    with RagCache(CacheConfig(max_question_chars=100, max_entry_bytes=1000), bus=bus) as c:
        assert c.store("q" * 101, "v") is False
        assert c.lookup("q" * 101) is None
        assert c.store("q", "x" * 5000) is False
        assert c.lookup("q") is None
    assert [getattr(e, "reason", "") for e in seen if type(e).__name__ == "Rejected"] == [
        "question too long", "question too long", "entry too large"]


def test_config_from_env(tmp_path: Path) -> None:
    env = {"RAG_CACHE_NAMESPACE": "t1", "RAG_CACHE_SQLITE_PATH": str(tmp_path / "e.db"),
           "RAG_CACHE_TTL": "60", "RAG_CACHE_REDIS_URL": "redis://h:1/0",
           "RAG_CACHE_REDIS_TIMEOUT": "0.5", "RAG_CACHE_SIGNING_KEYS": "a,b"}
    cfg = CacheConfig.from_env(env)
    assert cfg.namespace == "t1" and cfg.ttl == 60.0 and cfg.sqlite_path == tmp_path / "e.db"
    assert cfg.redis is not None and cfg.redis.timeout == 0.5
    assert [k.get_secret_value() for k in cfg.signing_keys] == ["a", "b"]
    with pytest.raises(ConfigError):
        CacheConfig.from_env({"RAG_CACHE_TTL": "soon"})


def test_values_are_json_round_tripped_in_every_tier(full: RagCache) -> None:
    full.store("q", {"t": (1, 2), "n": None})
    assert full.lookup("q").value == {"t": [1, 2], "n": None}  # type: ignore[union-attr]
    full.l1.clear()
    assert full.lookup("q").value == {"t": [1, 2], "n": None}  # type: ignore[union-attr]


def test_cache_hit_is_returned(full: RagCache) -> None:
    full.store("q", "v")
    assert isinstance(full.lookup("q"), CacheHit)


def test_cluster_partition_shares_a_slot(cluster_url: str) -> None:
    with RagCache(CacheConfig(redis=RedisConfig(url=cluster_url))) as c:
        assert c.l3.is_cluster  # type: ignore[union-attr]
        questions = [f"question number {i}" for i in range(50)]
        for q in questions:
            c.store(q, q, context="ctx-A")
        slots = {c.l3.client.keyslot(c.l3.data_key(c.ref(q, context="ctx-A")))  # type: ignore[union-attr]
                 for q in questions}
        assert len(slots) == 1
        other = {c.l3.client.keyslot(c.l3.data_key(c.ref("q", context=f"ctx-{i}")))  # type: ignore[union-attr]
                 for i in range(50)}
        assert len(other) > 10, "different partitions spread over the cluster"
        c.l1.clear()
        assert [h.value for h in c.lookup_many(questions, context="ctx-A")] == questions  # type: ignore[union-attr]
        redis.cluster.RedisCluster.from_url(cluster_url).close()


def test_peers_on_other_hosts_drop_their_own_l2_copies(tmp_path: Path, redis_url: str) -> None:
    """Two hosts: each its own SQLite file, one Redis.  Invalidations and newer
    answers published by one reach the other's L2, not only its L1."""
    redis_cfg = RedisConfig(url=redis_url)
    with RagCache(CacheConfig(sqlite_path=tmp_path / "a.db", redis=redis_cfg,
                              news_poll_interval=0.05)) as a, \
         RagCache(CacheConfig(sqlite_path=tmp_path / "b.db", redis=redis_cfg,
                              news_poll_interval=0.05)) as b:
        a.store("q1", "v1", tags=["doc"])
        a.store("q2", "old")
        assert b.lookup("q1").tier == "l3" and b.lookup("q2").tier == "l3"  # type: ignore[union-attr]
        assert b.l2.get(b.ref("q1"), time.time()) is not None  # type: ignore[union-attr]
        a.invalidate(tags=["doc"])
        a.store("q2", "new")
        assert wait_until(lambda: b.l2.get(b.ref("q1"), time.time()) is None)  # type: ignore[union-attr]
        assert wait_until(lambda: b.lookup("q2").value == "new")  # type: ignore[union-attr]
        assert b.lookup("q1") is None
