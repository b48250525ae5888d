"""One contract, every tier: L1, L2 (a real SQLite file), L3 on a real standalone
Redis and on a real Redis Cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from rag_cache_plugin import Corrupt, EventBus, RedisConfig
from rag_cache_plugin._codec import Codec
from rag_cache_plugin._entry import Entry
from rag_cache_plugin._keys import KeyMaker
from rag_cache_plugin._tiers import Ref, Tier
from rag_cache_plugin._tiers.memory import MemoryTier
from rag_cache_plugin._tiers.redis import RedisTier
from rag_cache_plugin._tiers.sqlite import SqliteTier

KINDS = ["l1", "l2", "l3", "l3-cluster"]
LOWER = ["l2", "l3", "l3-cluster"]


def make_tier(kind: str, request: pytest.FixtureRequest, bus: EventBus) -> Tier:
    codec = Codec()
    if kind == "l1":
        return MemoryTier(max_entries=1000, max_bytes=10_000_000, emit=bus.emit)
    if kind == "l2":
        path = request.getfixturevalue("tmp_path") / "l2.db"
        return SqliteTier(path, codec=codec, max_bytes=64 * 1024 * 1024, emit=bus.emit)
    url = request.getfixturevalue("redis_url" if kind == "l3" else "cluster_url")
    return RedisTier(RedisConfig(url=url, timeout=2.0), codec=codec, keys=KeyMaker(),
                     emit=bus.emit)


@pytest.fixture
def events() -> tuple[EventBus, list[object]]:
    bus, seen = EventBus(), []
    bus.subscribe(seen.append)
    return bus, seen


@pytest.fixture(params=KINDS)
def tier(request: pytest.FixtureRequest, events: tuple[EventBus, list[object]]) -> Iterator[Tier]:
    t = make_tier(request.param, request, events[0])
    yield t
    t.close()


@pytest.fixture(params=LOWER)
def lower(request: pytest.FixtureRequest, events: tuple[EventBus, list[object]]) -> Iterator[Tier]:
    t = make_tier(request.param, request, events[0])
    yield t
    t.close()


@pytest.fixture(params=KINDS)
async def atier(request: pytest.FixtureRequest,
                events: tuple[EventBus, list[object]]) -> AsyncIterator[Tier]:
    t = make_tier(request.param, request, events[0])
    yield t
    await t.aclose()


def entry(key: str, *, ns: str = "ns", part: str = "p1", value: object = None,
          ttl: float | None = None, tags: tuple[str, ...] = ()) -> Entry:
    now = time.time()
    e = Entry(key, ns, part, f"question {key}", value if value is not None else {"a": key},
              now, None if ttl is None else now + ttl, tags)
    Codec().encode(e)
    return e


def ref(e: Entry) -> Ref:
    return Ref(e.key, e.namespace, e.partition)


def test_roundtrip(tier: Tier) -> None:
    e = entry("k1", value={"answer": "Paris", "n": [1, 2.5, None, True]}, tags=("geo",))
    tier.set(e, time.time())
    got = tier.get(ref(e), time.time())
    assert got is not None
    assert (got.key, got.namespace, got.partition, got.question) == (e.key, "ns", "p1", e.question)
    assert got.value == {"answer": "Paris", "n": [1, 2.5, None, True]}
    assert got.tags == ("geo",)
    assert tier.get(Ref("absent", "ns", "p1"), time.time()) is None


def test_overwrite_replaces_value_and_tags(tier: Tier) -> None:
    tier.set(entry("k1", value="old", tags=("a",)), time.time())
    tier.set(entry("k1", value="new", tags=("b",)), time.time())
    assert tier.get(Ref("k1", "ns", "p1"), time.time()).value == "new"  # type: ignore[union-attr]
    assert tier.invalidate("ns", ["a"]) == []
    assert [r.key for r in tier.invalidate("ns", ["b"])] == ["k1"]
    assert tier.get(Ref("k1", "ns", "p1"), time.time()) is None


def test_ttl_expiry(tier: Tier) -> None:
    # A TTL long enough that a stalled machine does not expire it before the first read.
    e = entry("short", ttl=1.0)
    keep = entry("long", ttl=60)
    tier.set(e, time.time())
    tier.set(keep, time.time())
    assert tier.get(ref(e), time.time()) is not None
    time.sleep(1.15)
    assert tier.get(ref(e), time.time()) is None
    assert tier.get(ref(keep), time.time()) is not None


def test_delete_and_get_many(tier: Tier) -> None:
    es = [entry(f"k{i}") for i in range(5)]
    for e in es:
        tier.set(e, time.time())
    tier.delete([ref(es[0])])
    found = tier.get_many([ref(e) for e in es] + [Ref("nope", "ns", "p1")], time.time())
    assert sorted(found) == ["k1", "k2", "k3", "k4"]
    assert found["k3"].value == {"a": "k3"}


def test_invalidate_is_namespaced(tier: Tier) -> None:
    a = entry("a", tags=("doc1",))
    b = entry("b", tags=("doc1", "doc2"), part="p2")
    c = entry("c", tags=("doc2",))
    other = entry("o", ns="other", tags=("doc1",))
    for e in (a, b, c, other):
        tier.set(e, time.time())
    gone = tier.invalidate("ns", ["doc1"])
    assert sorted((r.key, r.partition) for r in gone) == [("a", "p1"), ("b", "p2")]
    now = time.time()
    assert tier.get(ref(a), now) is None and tier.get(ref(b), now) is None
    assert tier.get(ref(c), now) is not None
    assert tier.get(ref(other), now) is not None, "another namespace's tag must not match"


def test_clear_namespace_and_all(tier: Tier) -> None:
    a, o = entry("a"), entry("o", ns="other")
    tier.set(a, time.time())
    tier.set(o, time.time())
    tier.clear("ns")
    assert tier.get(ref(a), time.time()) is None
    assert tier.get(ref(o), time.time()) is not None
    tier.clear()
    assert tier.get(ref(o), time.time()) is None


def test_garbage_is_a_miss_deleted_and_reported(
    lower: Tier, events: tuple[EventBus, list[object]]
) -> None:
    e = entry("bad")
    garbage = [b"\x00\xffnot an entry", b'RC1 -\n{"v":1,"k":"bad"}', b"RC1 -\n[1,2,3]",
               b'RC1 -\n{"v":1,"k":"bad","ns":"ns","p":"p1","q":"q","c":"x","x":null,"t":[],'
               b'"val":1}',
               Codec().encode(entry("another-key"))]
    for raw in garbage:
        lower.set(e, time.time())
        _overwrite(lower, e, raw)
        assert lower.get(ref(e), time.time()) is None
        assert _raw(lower, e) is None, "a bad payload must be deleted"
    assert sum(isinstance(x, Corrupt) for x in events[1]) == len(garbage)


def _overwrite(tier: Tier, e: Entry, raw: bytes) -> None:
    if isinstance(tier, SqliteTier):
        with tier._write() as conn:
            conn.execute("UPDATE entries SET value = ? WHERE key = ?", (raw, e.key))
    else:
        assert isinstance(tier, RedisTier)
        tier.client.set(tier.data_key(ref(e)), raw)


def _raw(tier: Tier, e: Entry) -> bytes | None:
    if isinstance(tier, SqliteTier):
        row = tier._conn().execute("SELECT value FROM entries WHERE key = ?", (e.key,)).fetchone()
        return None if row is None else row[0]
    assert isinstance(tier, RedisTier)
    return tier.client.get(tier.data_key(ref(e)))  # type: ignore[return-value]


async def test_async_twins(atier: Tier) -> None:
    es = [entry(f"k{i}", tags=("t",) if i % 2 else ()) for i in range(4)]
    await asyncio.gather(*(atier.aset(e, time.time()) for e in es))
    got = await atier.aget(ref(es[1]), time.time())
    assert got is not None and got.value == {"a": "k1"}
    many = await atier.aget_many([ref(e) for e in es], time.time())
    assert sorted(many) == ["k0", "k1", "k2", "k3"]
    await atier.aset(entry("k3", value="v2", tags=("u",)), time.time())  # loses tag "t"
    gone = await atier.ainvalidate("ns", ["t"])
    assert sorted(r.key for r in gone) == ["k1"]
    assert [r.key for r in await atier.ainvalidate("ns", ["u"])] == ["k3"]
    await atier.adelete([ref(es[0])])
    assert await atier.aget(ref(es[0]), time.time()) is None
    await atier.aclear("ns")
    assert await atier.aget_many([ref(e) for e in es], time.time()) == {}
