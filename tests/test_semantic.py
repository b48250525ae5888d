"""Semantic matching with the real all-MiniLM-L6-v2: paraphrases hit in every tier and
across caches and processes; look-alikes, other partitions and removed entries never do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from rag_cache_plugin import (
    CacheConfig,
    CacheEvent,
    EmbeddingFailed,
    EventBus,
    FeedbackReported,
    RagCache,
    RedisConfig,
    Rejected,
    SemanticConfig,
)
from tests.minilm_support import Counting, minilm

ROOT = Path(__file__).resolve().parents[1]
Q = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"
ANSWER = "Use the 'Forgot password' link."


@pytest.fixture(scope="module")
def model() -> Any:
    return minilm()


def make(model: Any, *, sqlite: Path | None = None, redis_url: str | None = None,
         bus: EventBus | None = None, **semantic: Any) -> RagCache:
    return RagCache(CacheConfig(
        sqlite_path=sqlite, redis=None if redis_url is None else RedisConfig(url=redis_url),
        semantic=SemanticConfig(embedder=semantic.pop("embedder", model), **semantic),
        news_poll_interval=0.05), bus=bus)


def wait_until(cond: Callable[[], Any], timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = cond()
        if out:
            return out
        time.sleep(0.05)
    return cond()


def record(bus: EventBus) -> list[CacheEvent]:
    seen: list[CacheEvent] = []
    bus.subscribe(seen.append)
    return seen


# -- paraphrases hit, in every tier -----------------------------------------------------


def test_paraphrase_hits_in_l1(model: Any) -> None:
    with make(model) as c:
        assert c.store(Q, ANSWER)
        hit = c.lookup(PARAPHRASE)
        assert hit is not None and hit.kind == "semantic" and hit.tier == "l1"
        assert hit.value == ANSWER and hit.question == Q
        assert 0.9 < hit.score <= 1.0
        assert hit.evidence is not None and hit.evidence["query"] == PARAPHRASE
        assert c.lookup(Q).kind == "exact"  # type: ignore[union-attr]


@pytest.mark.parametrize("tiers", ["l2", "l3", "l3-cluster"])
def test_paraphrase_hits_in_lower_tiers(model: Any, tmp_path: Path, tiers: str,
                                        request: pytest.FixtureRequest) -> None:
    url = None
    if tiers.startswith("l3"):
        url = request.getfixturevalue("cluster_url" if tiers == "l3-cluster" else "redis_url")
    sqlite = tmp_path / "c.db" if tiers == "l2" else None
    with make(model, sqlite=sqlite, redis_url=url) as c:
        c.store(Q, ANSWER)
        c.l1.clear()  # only the lower tier has it now
        hit = c.lookup(PARAPHRASE)
        assert hit is not None and hit.kind == "semantic" and hit.tier == tiers[:2]
        assert c.lookup(PARAPHRASE).tier == "l1"  # type: ignore[union-attr]  # promoted
        c.semantic.flush()  # type: ignore[union-attr]
    # A new cache over the same tier loads the partition from it.
    with make(model, sqlite=sqlite, redis_url=url) as c2:
        hit = c2.lookup(PARAPHRASE)
        assert hit is not None and hit.kind == "semantic" and hit.tier == tiers[:2]


async def test_async_paraphrase(model: Any, tmp_path: Path, redis_url: str) -> None:
    async with make(model, sqlite=tmp_path / "c.db", redis_url=redis_url) as c:
        assert await c.astore(Q, ANSWER)
        c.l1.clear()
        hit = await c.alookup(PARAPHRASE)
        assert hit is not None and hit.kind == "semantic" and hit.tier == "l2"
        assert await c.alookup("How do I bake bread?") is None


def test_two_caches_share_l2_and_l3(model: Any, tmp_path: Path, redis_url: str) -> None:
    with make(model, sqlite=tmp_path / "c.db", redis_url=redis_url) as a, \
            make(model, sqlite=tmp_path / "c.db", redis_url=redis_url) as b:
        assert b.lookup(PARAPHRASE) is None  # b's partition is loaded (empty) now
        a.store(Q, ANSWER)
        hit = wait_until(lambda: b.lookup(PARAPHRASE))  # learnt through the news feed
        assert hit is not None and hit.kind == "semantic" and hit.value == ANSWER
        a.delete(Q)
        assert wait_until(lambda: b.lookup(PARAPHRASE) is None)


def test_l3_only_peer_learns_through_stream_and_hash(model: Any, redis_url: str) -> None:
    with make(model, redis_url=redis_url) as a, make(model, redis_url=redis_url) as b:
        assert b.lookup(PARAPHRASE) is None
        a.store(Q, ANSWER)
        assert wait_until(lambda: b.lookup(PARAPHRASE)) is not None
        a.semantic.flush()  # type: ignore[union-attr]
    with make(model, redis_url=redis_url) as late:  # started after: reads the vector hash
        hit = late.lookup(PARAPHRASE)
        assert hit is not None and hit.tier == "l3" and hit.value == ANSWER


_CHILD = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tests.minilm_support import minilm
    from rag_cache_plugin import RagCache, CacheConfig, RedisConfig, SemanticConfig
    args = json.loads(sys.argv[1])
    cfg = CacheConfig(sqlite_path=args["sqlite"], redis=RedisConfig(url=args["redis"]),
                      semantic=SemanticConfig(embedder=minilm()), news_poll_interval=0.05)
    out = {{}}
    with RagCache(cfg) as c:
        for q, v in args.get("store", []):
            c.store(q, v)
        for q in args.get("lookup", []):
            h = c.lookup(q)
            out[q] = None if h is None else [h.value, h.kind, h.tier]
        c.news.flush()
        c.semantic.flush()
    print(json.dumps(out))
""")


def run_child(tmp_path: Path, **args: Any) -> dict[str, Any]:
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, str(script), json.dumps(args)], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
def test_two_processes_share_l2_and_l3(model: Any, tmp_path: Path, redis_url: str) -> None:
    sqlite = tmp_path / "c.db"
    with make(model, sqlite=sqlite, redis_url=redis_url) as parent:
        assert parent.lookup(PARAPHRASE) is None  # loaded and empty: news must bring it
        parent.store("What is the capital of France?", "Paris")
        parent.news.flush()
        parent.semantic.flush()  # type: ignore[union-attr]
        out = run_child(tmp_path, sqlite=str(sqlite), redis=redis_url, store=[[Q, ANSWER]],
                        lookup=["Which city is the capital of France?"])
        assert out["Which city is the capital of France?"][:2] == ["Paris", "semantic"]
        hit = wait_until(lambda: parent.lookup(PARAPHRASE))
        assert hit is not None and hit.kind == "semantic" and hit.value == ANSWER
    # A process started later that shares only Redis finds both entries semantically.
    late = run_child(tmp_path, sqlite=str(tmp_path / "other.db"), redis=redis_url,
                     lookup=[PARAPHRASE, "Which city is the capital of France?"])
    assert late[PARAPHRASE] == [ANSWER, "semantic", "l3"]
    assert late["Which city is the capital of France?"] == ["Paris", "semantic", "l3"]


# -- look-alikes and other partitions never match --------------------------------------------

LOOK_ALIKES = [
    ("How do I convert USD to EUR?", "How do I convert EUR to USD?"),  # direction (order)
    ("How do I increase my credit score?", "How do I decrease my credit score?"),
    ("Is coffee good for your health?", "Is coffee not good for your health?"),  # negation
    ("What is the capital of France?", "What is the capital of Spain?"),  # entity
    ("How do I reset my Gmail password?", "How do I reset my Outlook password?"),
    ("What was the GDP of Germany in 2019?", "What was the GDP of Germany in 2020?"),  # number
    ("What is 15% of 200?", "What is 15% of 300?"),
    ("Flights from London to Paris", "Flights from Paris to London"),
]


@pytest.mark.parametrize("setting", ["strict", "balanced"])
def test_look_alikes_miss(model: Any, setting: str) -> None:
    with make(model, setting=setting) as c:
        for cached, _ in LOOK_ALIKES:
            c.store(cached, f"answer to {cached}")
        for _, other in LOOK_ALIKES:
            hit = c.lookup(other)
            assert hit is None, (other, hit and hit.question, hit and hit.evidence)
        # ...while a true paraphrase of one of them still hits.
        hit = c.lookup("Which city is the capital of France?")
        assert hit is not None and hit.value == "answer to What is the capital of France?"


def test_other_partitions_never_match(model: Any) -> None:
    with make(model) as c:
        history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        c.store(Q, ANSWER, context="You are terse.", llm_string="gpt-x t=0")
        c.store(Q, "in history", context=history, llm_string="gpt-x t=0")
        assert c.lookup(PARAPHRASE, context="You are terse.", llm_string="gpt-x t=0") is not None
        for kwargs in [dict(context="You are verbose.", llm_string="gpt-x t=0"),
                       dict(context="You are terse.", llm_string="gpt-x t=1"),
                       dict(context="You are terse.", llm_string="gpt-x t=0", namespace="t2"),
                       dict(context=[*history, {"role": "user", "content": "more"}],
                            llm_string="gpt-x t=0"),
                       dict(context="", llm_string="gpt-x t=0")]:
            assert c.lookup(PARAPHRASE, **kwargs) is None, kwargs
        hit = c.lookup(PARAPHRASE, context=history, llm_string="gpt-x t=0")
        assert hit is not None and hit.value == "in history"


# -- removed entries are never returned ---------------------------------------------------------


def test_invalidated_deleted_expired_never_returned(model: Any, tmp_path: Path,
                                                    redis_url: str) -> None:
    now = [1_000_000.0]
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url),
                      semantic=SemanticConfig(embedder=model))
    with RagCache(cfg, clock=lambda: now[0]) as c:
        c.store(Q, ANSWER, tags=["docs"])
        c.store("How do I delete my account?", "Settings > Delete")
        c.store("How do I change my email address?", "Settings > Email", ttl=60)
        assert c.lookup(PARAPHRASE) is not None
        assert c.invalidate(tags=["docs"]) == 1
        assert c.lookup(PARAPHRASE) is None
        c.delete("How do I delete my account?")
        assert c.lookup("How can I delete my account?") is None
        assert c.lookup("How can I change my email address?") is not None
        now[0] += 61
        assert c.lookup("How can I change my email address?") is None
        info = c.semantic.info()  # type: ignore[union-attr]
        assert sum(p["size"] for p in info["partitions"].values()) == 0


def test_entry_gone_behind_the_index_is_never_returned(model: Any, tmp_path: Path,
                                                       redis_url: str) -> None:
    with make(model, sqlite=tmp_path / "c.db", redis_url=redis_url) as c:
        c.store(Q, ANSWER)
        ref = c.ref(Q)
        # Remove the entry from every tier without telling the semantic layer.
        c.l1.discard([ref.key])
        c.l2.delete([ref])  # type: ignore[union-attr]
        c.l3.delete([ref])  # type: ignore[union-attr]
        assert c.lookup(PARAPHRASE) is None
        assert ref.key not in c.semantic._where  # type: ignore[union-attr]  # dropped


def test_tier_down_is_a_miss_not_a_drop(model: Any, tmp_path: Path) -> None:
    cfg = CacheConfig(redis=RedisConfig(url="redis://127.0.0.1:1/0", timeout=0.05,
                                        connect_timeout=0.05),
                      semantic=SemanticConfig(embedder=model))
    with RagCache(cfg) as c:
        c.store(Q, ANSWER)
        c.l1.clear()
        assert c.lookup(PARAPHRASE) is None  # L3 unreachable: unknown, so kept in the index
        assert c.ref(Q).key in c.semantic._where  # type: ignore[union-attr]


def test_clear_empties_index_and_redis(model: Any, redis_url: str) -> None:
    with make(model, redis_url=redis_url) as c:
        c.store(Q, ANSWER)
        c.semantic.flush()  # type: ignore[union-attr]
        r = redis.Redis.from_url(redis_url)
        assert any(b":v:" in k for k in r.keys("*"))
        c.clear()
        assert c.lookup(PARAPHRASE) is None
        assert not any(b":v:" in k for k in r.keys("*"))


# -- feedback -------------------------------------------------------------------------------


def test_feedback_tightens_blocks_and_persists(model: Any, tmp_path: Path,
                                               redis_url: str) -> None:
    bus = EventBus()
    seen = record(bus)
    with make(model, sqlite=tmp_path / "c.db", redis_url=redis_url, bus=bus,
              setting="balanced") as c:
        c.store(Q, ANSWER)
        hit = c.lookup(PARAPHRASE)
        assert hit is not None
        base = c.semantic.threshold("default", hit.partition)  # type: ignore[union-attr]
        c.feedback(hit, correct=True)
        c.feedback(hit, correct=False)
        tight = c.semantic.threshold("default", hit.partition)  # type: ignore[union-attr]
        assert tight > base
        assert c.lookup(PARAPHRASE) is None  # that exact pair is blocked
        reports = [e for e in seen if isinstance(e, FeedbackReported)]
        assert [r.correct for r in reports] == [True, False] and reports[0].kind == "semantic"
    for shared in ({"sqlite": tmp_path / "c.db"}, {"redis_url": redis_url}):
        with make(model, setting="balanced", **shared) as again:
            assert again.semantic.threshold("default", hit.partition) == tight  # type: ignore[union-attr]
            assert again.lookup(PARAPHRASE) is None
            other = again.lookup("How could I reset my password?")
            assert other is None or other.score >= tight


def test_wrong_exact_hit_is_dropped(model: Any) -> None:
    with make(model) as c:
        c.store(Q, "stale")
        hit = c.lookup(Q)
        c.feedback(hit, correct=False)  # type: ignore[arg-type]
        assert c.lookup(Q) is None and c.lookup(PARAPHRASE) is None


# -- cost and limits ---------------------------------------------------------------------------


def test_exact_hits_never_embed_and_stores_embed_once(model: Any, tmp_path: Path) -> None:
    emb = Counting()
    with make(model, sqlite=tmp_path / "c.db", embedder=emb) as c:
        assert c.lookup(Q) is None
        assert emb.calls == 0  # empty partition: nothing to compare, nothing embedded
        c.store(Q, ANSWER)
        calls = emb.calls
        for _ in range(5):
            assert c.lookup(Q).kind == "exact"  # type: ignore[union-attr]
            assert c.lookup("how do i reset my password").kind == "exact"  # type: ignore[union-attr]
        c.l1.clear()
        assert c.lookup(Q).tier == "l2"  # type: ignore[union-attr]
        assert emb.calls == calls
        assert c.lookup(PARAPHRASE) is not None
        assert emb.calls == calls + 1
        c.store(PARAPHRASE, "again")  # the lookup's embedding is reused
        assert emb.calls == calls + 1
        assert emb.texts.count("how can i reset my password") == 1


def test_long_question_is_exact_only(model: Any) -> None:
    bus = EventBus()
    seen = record(bus)
    with make(model, bus=bus, max_embed_chars=40) as c:
        long_q = "How do I reset my password " + "and keep my settings " * 3 + "?"
        assert c.store(long_q, "long")
        assert c.lookup(long_q).kind == "exact"  # type: ignore[union-attr]
        assert c.lookup(long_q.replace("How do I", "How can I")) is None
        assert any(isinstance(e, Rejected) and "embed" in e.reason for e in seen)


def test_embedder_failure_is_a_miss_and_an_event(model: Any) -> None:
    bus = EventBus()
    seen = record(bus)
    emb = Counting()
    with make(model, bus=bus, embedder=emb) as c:
        c.store(Q, ANSWER)
        emb.fail = True
        assert c.lookup(PARAPHRASE) is None
        assert c.store("How do I log in?", "Use SSO.")  # stored, exact only
        assert c.lookup("How do I log in?") is not None
        failures = [e for e in seen if isinstance(e, EmbeddingFailed)]
        assert failures and "embedding service down" in failures[0].error


def test_ann_backend_gives_the_same_decisions(model: Any) -> None:
    questions = [f"How do I configure feature number {i} of the app?" for i in range(30)]
    with make(model, ann_threshold=8) as c:
        for q in [Q, *questions]:
            c.store(q, q)
        info = c.semantic.info()  # type: ignore[union-attr]
        assert [p["backend"] for p in info["partitions"].values()] == ["usearch"]
        hit = c.lookup(PARAPHRASE)
        assert hit is not None and hit.value == Q
        assert c.lookup("How do I bake sourdough bread?") is None


def test_vectors_of_another_model_are_not_trusted(tmp_path: Path) -> None:
    from tests.minilm_support import encode

    first = Counting(encode)
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db", semantic=SemanticConfig(
            embedder=first, model_id="model-a"))) as a:
        a.store(Q, ANSWER)
    second = Counting(encode)
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db", semantic=SemanticConfig(
            embedder=second, model_id="model-b"))) as b:
        hit = b.lookup(PARAPHRASE)
        assert hit is not None
        assert "how do i reset my password" in second.texts  # re-embedded, not reused
