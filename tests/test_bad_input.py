"""Bad input through the public API, and garbage injected into the shared tiers.

Required: misuse of the API is a clear ``ValueError``; any other input is a miss or
a stored entry, never another exception; configured limits (entry size, question
length, what is embedded) turn into events; garbage found in L2 or L3 (random bytes,
JSON of the wrong shape, LangChain constructor markers, a huge value, a Redis value of
the wrong type) is a miss, is deleted and is counted (a ``Corrupt`` event).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import importlib.util
import json
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag_cache_plugin import (
    CacheConfig,
    Corrupt,
    EventBus,
    RagCache,
    RedisConfig,
    Rejected,
    TierFailed,
)
from rag_cache_plugin._codec import Codec
from rag_cache_plugin._entry import Entry

# Every code point, lone surrogates and NUL included (hypothesis leaves surrogates out
# of text() by default).
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
SPECIAL = st.sampled_from([
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff", "x\udc80y", "\U0010ffff", "\ufeff",
    "\u202e", "\uff26\uff55\uff4c\uff4c", "e\u0301", "ﬁ", "İ", "ß", "\n\t\r",
    "[" * 5000, "{" * 5000,
    '{"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {"command": "id"}}',
    '[{"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "Human',
])


def _lc_messages(contents: list[str], cut: int | None, depth: int) -> str:
    """LangChain ``dumps(messages)``-like JSON, maybe truncated or nested deep."""
    kinds = ["SystemMessage", "HumanMessage", "AIMessage"]
    msgs: Any = [{"lc": 1, "type": "constructor",
                  "id": ["langchain", "schema", "messages", kinds[i % 3]],
                  "kwargs": {"content": c, "type": kinds[i % 3][:-7].lower()}}
                 for i, c in enumerate(contents)]
    for _ in range(depth):
        msgs = {"kwargs": msgs}
    text = json.dumps(msgs, ensure_ascii=False)  # lone surrogates stay raw
    return text if cut is None else text[:cut]


LC_JSON = st.builds(_lc_messages, st.lists(ANY_TEXT, max_size=4),
                    st.none() | st.integers(0, 400), st.integers(0, 200))
TEXT = st.one_of(ANY_TEXT, SPECIAL, LC_JSON)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=25,
)
JSON_CONTEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=10,
)


def same(a: Any, b: Any) -> bool:
    """JSON equality that treats NaN as equal to itself."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.fixture
def full(tmp_path: Path, redis_url: str) -> Iterator[tuple[RagCache, list[Any]]]:
    bus, seen = EventBus(), list[Any]()
    bus.subscribe(seen.append)
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url))
    with RagCache(cfg, bus=bus) as cache:
        yield cache, seen


def failures(seen: list[Any]) -> list[Any]:
    return [e for e in seen if isinstance(e, TierFailed | Corrupt)]


# -- any text, any JSON value ----------------------------------------------------------


def test_any_text_and_json_is_stored_or_missed(full: tuple[RagCache, list[Any]],
                                               figures: Callable[..., str]) -> None:
    cache, seen = full
    counts = {"examples": 0, "stored": 0, "hits": 0, "l2_ok": 0, "l3_ok": 0}

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(q=TEXT, ctx=st.one_of(TEXT, JSON_CONTEXT), llm=TEXT, value=JSON_VALUES,
           ns=st.sampled_from(["default", "tenant \u00e9", "t\x00nul"]))
    def check(q: str, ctx: Any, llm: str, value: Any, ns: str) -> None:
        counts["examples"] += 1
        before = cache.lookup(q, context=ctx, llm_string=llm, namespace=ns)
        assert before is None or before.namespace == ns
        assert cache.store(q, value, context=ctx, llm_string=llm, namespace=ns) is True
        counts["stored"] += 1
        hit = cache.lookup(q, context=ctx, llm_string=llm, namespace=ns)
        assert hit is not None and same(hit.value, round_trip(value))
        counts["hits"] += 1
        ref = cache.ref(q, context=ctx, llm_string=llm, namespace=ns)
        for tier, name in ((cache.l2, "l2_ok"), (cache.l3, "l3_ok")):
            assert tier is not None
            entry = tier.get(ref, time.time())
            assert entry is not None and same(entry.value, round_trip(value))
            assert entry.question == q
            counts[name] += 1

    check()
    figures("any-text-json", **counts, tier_failed_or_corrupt=len(failures(seen)))
    assert failures(seen) == []


async def test_any_text_async(full: tuple[RagCache, list[Any]]) -> None:
    cache, seen = full
    loop = asyncio.get_running_loop()

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(q=TEXT, value=JSON_VALUES)
    def check(q: str, value: Any) -> None:
        # hypothesis drives sync functions: run the async API on the test's loop from
        # a worker thread.
        async def run() -> None:
            assert await cache.astore(q, value, context=q, llm_string=q) is True
            cache.l1.clear()
            hits = await cache.alookup_many([q, q + "?!"], context=q, llm_string=q)
            assert hits[0] is not None and same(hits[0].value, round_trip(value))

        asyncio.run_coroutine_threadsafe(run(), loop).result(30)

    await asyncio.to_thread(check)
    assert failures(seen) == []


# -- misuse is a ValueError ---------------------------------------------------------------


def _circular() -> list[Any]:
    x: list[Any] = []
    x.append(x)
    return x


def _deep(n: int) -> Any:
    v: Any = 0
    for _ in range(n):
        v = [v]
    return v


MISUSE: dict[str, Callable[[RagCache], object]] = {
    "question bytes": lambda c: c.lookup(b"q"),  # type: ignore[arg-type]
    "question None": lambda c: c.store(None, "v"),  # type: ignore[arg-type]
    "question list": lambda c: c.lookup(["q"]),  # type: ignore[arg-type]
    "llm_string int": lambda c: c.lookup("q", llm_string=3),  # type: ignore[arg-type]
    "namespace empty": lambda c: c.lookup("q", namespace=""),
    "namespace long": lambda c: c.lookup("q", namespace="n" * 257),
    "namespace int": lambda c: c.store("q", "v", namespace=7),  # type: ignore[arg-type]
    "namespace surrogate": lambda c: c.store("q", "v", namespace="t\ud800"),
    "tags string": lambda c: c.store("q", "v", tags="doc"),
    "tags ints": lambda c: c.store("q", "v", tags=[1]),  # type: ignore[list-item]
    "tag surrogate": lambda c: c.store("q", "v", tags=["d\udc00"]),
    "invalidate tag surrogate": lambda c: c.invalidate(tags=["d\udc00"]),
    "ttl zero": lambda c: c.store("q", "v", ttl=0),
    "ttl negative": lambda c: c.store("q", "v", ttl=-5),
    "ttl nan": lambda c: c.store("q", "v", ttl=math.nan),
    "ttl inf": lambda c: c.store("q", "v", ttl=math.inf),
    "ttl huge": lambda c: c.store("q", "v", ttl=1e300),
    "ttl string": lambda c: c.store("q", "v", ttl="60"),  # type: ignore[arg-type]
    "ttl bool": lambda c: c.store("q", "v", ttl=True),
    "value object": lambda c: c.store("q", object()),
    "value set": lambda c: c.store("q", {1, 2}),
    "value bytes": lambda c: c.store("q", b"raw"),
    "value complex": lambda c: c.store("q", 1j),
    "value circular": lambda c: c.store("q", _circular()),
    "value tuple key": lambda c: c.store("q", {(1, 2): "v"}),
    "value 100k deep": lambda c: c.store("q", _deep(100_000)),
    "context object": lambda c: c.lookup("q", context=object()),
    "context set": lambda c: c.store("q", "v", context={1}),
    "context 100k deep": lambda c: c.lookup("q", context=_deep(100_000)),
    "context mixed keys": lambda c: c.lookup("q", context={1: 1, "a": 2}),
    "feedback not a hit": lambda c: c.feedback("hit", correct=False),  # type: ignore[arg-type]
}


def test_misuse_is_a_value_error(full: tuple[RagCache, list[Any]],
                                 figures: Callable[..., str]) -> None:
    cache, seen = full
    raised: dict[str, str] = {}
    for name, call in MISUSE.items():
        try:
            call(cache)
        except ValueError as exc:
            raised[name] = str(exc)
        except Exception as exc:  # the failure message names the case
            raise AssertionError(f"{name}: {type(exc).__name__}: {exc}") from exc
        else:
            raise AssertionError(f"{name}: no ValueError")
    assert all(raised.values()), "every ValueError says what is wrong"
    assert cache.store("q", "v") and cache.lookup("q") is not None  # still works
    figures("misuse", cases=len(MISUSE), value_errors=len(raised),
            tier_failed_or_corrupt=len(failures(seen)))
    assert failures(seen) == [], "misuse must never count against a tier"


OBJECTS = st.one_of(
    JSON_VALUES, st.builds(object), st.sets(st.integers(), max_size=3), st.binary(max_size=8),
    st.complex_numbers(), st.tuples(st.integers(), ANY_TEXT), st.frozensets(st.integers()),
    st.dictionaries(st.tuples(st.integers()), st.integers(), min_size=1, max_size=2),
    st.lists(st.builds(object), min_size=1, max_size=2),
)


def test_any_python_object_is_stored_or_a_value_error(
        full: tuple[RagCache, list[Any]], figures: Callable[..., str]) -> None:
    cache, seen = full
    counts = {"stored": 0, "value_error": 0}

    @settings(max_examples=80, deadline=None, database=None)
    @given(value=OBJECTS, ctx=st.one_of(TEXT, OBJECTS), ttl=st.none() | st.floats())
    def check(value: Any, ctx: Any, ttl: float | None) -> None:
        try:
            ok = cache.store("question", value, context=ctx, ttl=ttl)
        except ValueError:
            counts["value_error"] += 1
            return
        assert ok is True
        counts["stored"] += 1
        hit = cache.lookup("question", context=ctx)
        assert hit is not None or (ttl is not None and ttl < 1e-3)

    check()
    figures("any-object", **counts, tier_failed_or_corrupt=len(failures(seen)))
    assert failures(seen) == []


def test_only_json_data_is_stored_whichever_encoder_writes_it(
        full: tuple[RagCache, list[Any]]) -> None:
    """Values go through orjson when they read back equal, else through the stdlib
    encoder: objects orjson would write but JSON does not define stay a ValueError,
    and what orjson would change (NaN, tuples, huge integers) is stored exactly."""
    cache, seen = full

    @dataclasses.dataclass
    class Point:
        x: int

    class Colour(enum.Enum):
        RED = "red"

    for bad in (datetime.datetime(2026, 1, 1), uuid.UUID(int=7), Point(1), Colour.RED,
                {"when": datetime.date(2026, 1, 1)}, [Point(2)]):
        with pytest.raises(ValueError):
            cache.store("q", bad)
    exact = {"nan": math.nan, "big": 2**70, "tuple": (1, 2), "keys": {1: "a"},
             "text": "caf\u00e9 \U0001f600 \x00 \ud800"}
    for name, value in exact.items():
        assert cache.store(name, value) is True
        ref = cache.ref(name)
        for tier in (cache.l1, cache.l2, cache.l3):
            assert tier is not None
            entry = tier.get(ref, time.time())
            assert entry is not None and same(entry.value, round_trip(value)), (name, tier)
    assert failures(seen) == []


# -- size limits ------------------------------------------------------------------------


def test_ten_megabyte_inputs(full: tuple[RagCache, list[Any]],
                             figures: Callable[..., str]) -> None:
    cache, seen = full
    big = "How do I reset my password? " * (10 * 1024 * 1024 // 28)
    timings: dict[str, float] = {}

    def timed(label: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        timings[label] = time.perf_counter() - t
        return out

    # A 10 MB prompt is over max_question_chars: refused, a miss, an event each.
    assert timed("store_q", lambda: cache.store(big, "v")) is False
    assert timed("lookup_q", lambda: cache.lookup(big)) is None
    # Context and llm_string are hashed, never stored: a 10 MB one is cached fine.
    assert timed("store_ctx", lambda: cache.store("q", "v", context=big, llm_string=big))
    cache.l1.clear()
    hit = timed("lookup_ctx", lambda: cache.lookup("q", context=big, llm_string=big))
    assert hit is not None and hit.tier == "l2"
    # A 10 MB value is over max_entry_bytes.
    assert timed("store_value", lambda: cache.store("q2", big)) is False
    assert cache.lookup("q2") is None
    rejected = [e.reason for e in seen if isinstance(e, Rejected)]
    figures("10MB", **{f"{k}_s": v for k, v in timings.items()}, rejected=rejected)
    assert rejected == ["question too long", "question too long", "entry too large"]
    assert failures(seen) == []
    # Limits are configuration: raise the question limit and the entry limit decides.
    bus, seen2 = EventBus(), list[Any]()
    bus.subscribe(seen2.append)
    with RagCache(CacheConfig(max_question_chars=20_000_000, max_entry_bytes=1 << 20),
                  bus=bus) as c:
        assert c.store(big, "v") is False
    assert [e.reason for e in seen2 if isinstance(e, Rejected)] == ["entry too large"]


def test_max_embed_chars_is_an_event() -> None:
    if importlib.util.find_spec("rag_cache_plugin._semantic") is None:
        pytest.skip("semantic layer not merged yet")
    import numpy as np

    from rag_cache_plugin import SemanticConfig

    def embed(texts: list[str]) -> Any:
        return np.ones((len(texts), 8), dtype="float32")

    bus, seen = EventBus(), list[Any]()
    bus.subscribe(seen.append)
    cfg = CacheConfig(semantic=SemanticConfig(embedder=embed, max_embed_chars=100))
    with RagCache(cfg, bus=bus) as cache:
        long_q = "why " * 100
        assert cache.store(long_q, "v") is True  # stored, matched exactly only
        assert cache.lookup(long_q).value == "v"  # type: ignore[union-attr]
        assert cache.lookup(long_q + "really") is None
    assert any(isinstance(e, Rejected) and "embed" in e.reason for e in seen)


# -- garbage injected into L2 and L3 ---------------------------------------------------------

LC_PAYLOAD = {"lc": 1, "type": "constructor", "id": ["os", "system"],
              "kwargs": {"command": "touch /tmp/rag-cache-pwned"}}


def _envelope(body: Any) -> bytes:
    return b"RC1 -\n" + json.dumps(body).encode()


def _valid_doc(key: str, value: Any) -> dict[str, Any]:
    return {"v": 1, "k": key, "ns": "default", "p": "p", "q": "q", "c": time.time(),
            "x": None, "t": [], "val": value}


GARBAGE: dict[str, Callable[[str], bytes]] = {
    "random bytes": lambda key: random.Random(key).randbytes(300),
    "empty": lambda key: b"",
    "json wrong shape": lambda key: json.dumps({"answer": "hi"}).encode(),
    "envelope wrong shape": lambda key: _envelope([1, 2, 3]),
    "envelope missing fields": lambda key: _envelope({"v": 1, "k": key}),
    "envelope wrong types": lambda key: _envelope(_valid_doc(key, "v") | {"ns": 1, "t": "x"}),
    "envelope other key": lambda key: _envelope(_valid_doc("0" * 32, "v")),
    "envelope bad version": lambda key: _envelope(_valid_doc(key, "v") | {"v": 99}),
    "truncated envelope": lambda key: _envelope(_valid_doc(key, "v"))[:-7],
    "lc constructor raw": lambda key: json.dumps(LC_PAYLOAD).encode(),
    "lc constructor nested": lambda key: _envelope({"lc": 1, "kwargs": LC_PAYLOAD}),
    "huge random": lambda key: os.urandom(3 << 20),
    "huge valid envelope": lambda key: Codec().encode(
        Entry(key, "default", "p", "q", "x" * (3 << 20), time.time())),
    "deep json": lambda key: _envelope(_valid_doc(key, 0))[:-2] + b"[" * 100_000 + b"}",
}


@pytest.fixture
def garbage_cache(request: pytest.FixtureRequest,
                  tmp_path: Path) -> Iterator[tuple[RagCache, list[Any]]]:
    tier = request.param
    bus, seen = EventBus(), list[Any]()
    bus.subscribe(seen.append)
    redis = None
    if tier != "l2":
        url = request.getfixturevalue("redis_url" if tier == "l3" else "cluster_url")
        redis = RedisConfig(url=url)
    # L2 only for the L2 case; L3 alone for the others, so the read reaches the garbage.
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db" if tier == "l2" else None, redis=redis,
                      max_entry_bytes=1 << 20)
    with RagCache(cfg, bus=bus) as cache:
        yield cache, seen


def _inject(cache: RagCache, q: str, payload: bytes, how: str = "value") -> None:
    ref = cache.ref(q)
    if cache.l2 is not None:
        with cache.l2._write() as conn:
            if how == "text":
                conn.execute("UPDATE entries SET value = CAST(? AS TEXT) WHERE key = ?",
                             (payload, ref.key))
            elif how == "expire":
                conn.execute("UPDATE entries SET expire_time = 'soon' WHERE key = ?", (ref.key,))
            else:
                conn.execute("UPDATE entries SET value = ? WHERE key = ?", (payload, ref.key))
    else:
        assert cache.l3 is not None
        name = cache.l3.data_key(ref)
        if how == "hash":
            cache.l3.client.delete(name)
            cache.l3.client.hset(name, "field", payload[:10] or b"x")
        else:
            cache.l3.client.set(name, payload)


def _present(cache: RagCache, q: str) -> bool:
    ref = cache.ref(q)
    if cache.l2 is not None:
        row = cache.l2._conn().execute("SELECT 1 FROM entries WHERE key = ?", (ref.key,))
        return row.fetchone() is not None
    assert cache.l3 is not None
    return bool(cache.l3.client.exists(cache.l3.data_key(ref)))


def _read(cache: RagCache, q: str, path: str) -> Any:
    if path == "lookup":
        return cache.lookup(q)
    if path == "lookup_many":
        return cache.lookup_many([q])[0]

    async def run() -> Any:
        try:
            return await (cache.alookup(q) if path == "alookup"
                          else cache.alookup_many([q]))
        finally:  # close this loop's connections; the cache stays open
            loop = asyncio.get_running_loop()
            client = cache.l3._async.pop(loop, None) if cache.l3 else None
            if client is not None:
                await client.aclose()
            pair = cache.l2._async.pop(loop, None) if cache.l2 else None
            if pair is not None:
                await pair[0].close()

    out = asyncio.run(run())
    return out[0] if isinstance(out, list) else out


CASES = [(name, "value") for name in GARBAGE] + [("text column", "text"),
                                                  ("expire not a number", "expire"),
                                                  ("redis hash", "hash")]


@pytest.mark.parametrize("garbage_cache", ["l2", "l3", "l3-cluster"], indirect=True)
@pytest.mark.parametrize("path", ["lookup", "lookup_many", "alookup", "alookup_many"])
def test_injected_garbage_is_a_counted_deleted_miss(
        garbage_cache: tuple[RagCache, list[Any]], path: str,
        figures: Callable[..., str]) -> None:
    cache, seen = garbage_cache
    tier = "l2" if cache.l2 is not None else "l3"
    label = "l3-cluster" if cache.l3 is not None and cache.l3.is_cluster else tier
    done = 0
    for name, how in CASES:
        if (how in ("text", "expire") and tier != "l2") or (how == "hash" and tier != "l3"):
            continue
        q = f"question with {name}"
        assert cache.store(q, "the real answer")
        _inject(cache, q, GARBAGE.get(name, GARBAGE["random bytes"])(cache.ref(q).key), how)
        cache.l1.clear()
        before = sum(1 for e in seen if isinstance(e, Corrupt))
        assert _read(cache, q, path) is None, name
        counted = sum(1 for e in seen if isinstance(e, Corrupt)) - before
        if how == "hash" and path.endswith("_many"):
            # MGET reads a key of another type as nil: a miss that is neither counted
            # nor deleted (the next store overwrites it; a single GET does both).
            assert counted == 0
            continue
        assert counted == 1, f"{name}: counted {counted} times"
        assert not _present(cache, q), f"{name}: not deleted"
        assert _read(cache, q, path) is None  # and stays a miss
        done += 1
    corrupt = [e for e in seen if isinstance(e, Corrupt)]
    figures(f"garbage-{label}-{path}", cases=done, corrupt_events=len(corrupt),
            tier_failed=sum(1 for e in seen if isinstance(e, TierFailed)),
            breaker=cache.breakers[tier].state)
    assert len(corrupt) == done
    assert not [e for e in seen if isinstance(e, TierFailed)], "garbage is not a tier failure"
    assert not Path("/tmp/rag-cache-pwned").exists()


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**40, [2**70, {"id": -(2**100)}],
                                   {"n": 12345678901234567890123, "f": 1.5}])
def test_big_integers_come_back_exact(full: tuple[RagCache, list[Any]], value: Any) -> None:
    """orjson, on the fast read path, silently turns integers beyond 64 bits into
    floats: the codec must route such entries to the exact parser, in every tier."""
    cache, seen = full
    assert cache.store("q", value)
    ref = cache.ref("q")
    hit = cache.lookup("q")
    assert hit is not None and hit.value == value and same(hit.value, value)
    for tier in (cache.l2, cache.l3):
        assert tier is not None
        entry = tier.get(ref, time.time())
        assert entry is not None and entry.value == value and same(entry.value, value)
    assert failures(seen) == []


def test_lc_markers_in_a_valid_unsigned_entry_stay_inert_data(redis_url: str) -> None:
    """Without signing, a writable Redis can plant a well-formed entry.  Its value is
    data: the core never revives LangChain objects (the adapter rebuilds only its
    allow-list), so constructor markers come back as a plain dict and run nothing."""
    with RagCache(CacheConfig(redis=RedisConfig(url=redis_url))) as cache:
        ref = cache.ref("q")
        doc = _valid_doc(ref.key, LC_PAYLOAD) | {"p": ref.partition}
        assert cache.l3 is not None
        cache.l3.client.set(cache.l3.data_key(ref), _envelope(doc))
        hit = cache.lookup("q")
        assert hit is not None and hit.value == LC_PAYLOAD and type(hit.value) is dict
    assert not Path("/tmp/rag-cache-pwned").exists()
