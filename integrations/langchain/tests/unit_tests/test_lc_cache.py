"""RagLLMCache behaviour: construction, partitions, marks, refusals, corrupt entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_rag_cache import MARK, RagLLMCache

from rag_cache_plugin import CacheConfig, Corrupt, RagCache, Rejected

LLM = "[('_type', 'fake'), ('stop', None)]"


def chat_prompt(question: str, system: str = "Be terse.") -> str:
    return dumps([SystemMessage(system), HumanMessage(question)])


def answer(text: str = "Paris") -> list[ChatGeneration]:
    return [ChatGeneration(message=AIMessage(text))]


def test_constructors(tmp_path: Path) -> None:
    with RagLLMCache(sqlite_path=tmp_path / "kw.db") as c:
        assert c.cache.l2 is not None and c._owned
    with RagLLMCache(CacheConfig(sqlite_path=tmp_path / "cfg.db")) as c:
        assert c.cache.l2 is not None
    with RagCache(CacheConfig()) as core:
        c = RagLLMCache(core, namespace="tenant-a")
        c.close()  # not owned: the RagCache stays usable
        core.store("q", 1)
        assert c.namespace == "tenant-a" and c.bus is core.bus
    with pytest.raises(TypeError):
        RagLLMCache(CacheConfig(), sqlite_path="x.db")
    with pytest.raises(TypeError):
        RagLLMCache("cache.db")  # type: ignore[arg-type]
    for bad in ({"ttl": 0}, {"ttl": "1"}, {"tags": "one"}, {"tags": [1]}, {"namespace": ""}):
        with pytest.raises(ValueError):
            RagLLMCache(CacheConfig(), **bad)  # type: ignore[arg-type]


def test_hit_is_marked_and_a_list() -> None:
    with RagLLMCache(CacheConfig()) as c:
        p = chat_prompt("Capital of France?")
        assert c.lookup(p, LLM) is None
        c.update(p, LLM, answer())
        got = c.lookup(p, LLM)
        assert isinstance(got, list) and got[0].text == "Paris"
        mark = got[0].message.response_metadata[MARK]
        assert {k: mark[k] for k in ("tier", "kind", "score")} == {
            "tier": "l1", "kind": "exact", "score": 1.0}
        # the id names this serving, so two hits of one entry are told apart
        again = c.lookup(p, LLM)
        assert again is not None
        assert isinstance(mark["id"], str) and mark["id"]
        assert again[0].message.response_metadata[MARK]["id"] != mark["id"]


def test_lexical_variants_hit_and_partitions_do_not_cross() -> None:
    with RagLLMCache(CacheConfig()) as c:
        c.update(chat_prompt("Capital of France?"), LLM, answer())
        assert c.lookup(chat_prompt("  capital of FRANCE ?"), LLM) is not None
        assert c.lookup(chat_prompt("Capital of France?", system="Be verbose."), LLM) is None
        assert c.lookup(chat_prompt("Capital of France?"), LLM + "temperature=1") is None
        assert c.lookup("Capital of France?", LLM) is None  # a plain prompt: no context


def test_text_marks_only_on_request() -> None:
    with RagLLMCache(CacheConfig()) as c, RagLLMCache(CacheConfig(), mark_text=True) as m:
        for cache in (c, m):
            cache.update("prompt", LLM, [Generation(text="t", generation_info={"a": 1})])
        assert c.lookup("prompt", LLM) == [Generation(text="t", generation_info={"a": 1})]
        (g,) = m.lookup("prompt", LLM)  # type: ignore[misc]
        info = g.generation_info
        assert info is not None and info["a"] == 1 and info[MARK]["id"]
        assert {k: v for k, v in info[MARK].items() if k != "id"} == {
            "tier": "l1", "kind": "exact", "score": 1.0}
    with RagLLMCache(CacheConfig(), mark=False) as c:
        c.update(chat_prompt("q"), LLM, answer())
        assert MARK not in c.lookup(chat_prompt("q"), LLM)[0].message.response_metadata  # type: ignore[index]


def test_marks_name_the_tier(tmp_path: Path) -> None:
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db")
    with RagLLMCache(cfg) as a:
        a.update(chat_prompt("q"), LLM, answer())
    with RagLLMCache(cfg) as b:  # a new process: empty L1, same file
        first = b.lookup(chat_prompt("q"), LLM)
        second = b.lookup(chat_prompt("q"), LLM)
        assert first[0].message.response_metadata[MARK]["tier"] == "l2"  # type: ignore[index]
        assert second[0].message.response_metadata[MARK]["tier"] == "l1"  # type: ignore[index]


def test_unsupported_generations_are_not_cached_and_release_the_key() -> None:
    with RagLLMCache(CacheConfig()) as c:
        events: list[object] = []
        c.bus.subscribe(events.append, (Rejected,))
        p = chat_prompt("q")
        assert c.lookup(p, LLM) is None  # leads the key
        c.update(p, LLM, [ChatGeneration(message=HumanMessage("not an AI message"))])
        assert c.lookup(p, LLM) is None
        assert len(events) == 1 and "not cached" in events[0].reason  # type: ignore[attr-defined]
        assert len(c.cache.flights) == 1  # the second lookup leads again; nothing stuck
        c.update(p, LLM, answer())
        assert len(c.cache.flights) == 0


def test_corrupt_payload_is_a_miss_deleted_and_reported(tmp_path: Path) -> None:
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db")
    with RagLLMCache(cfg) as c:
        events: list[Corrupt] = []
        c.bus.subscribe(events.append, (Corrupt,))  # type: ignore[arg-type]
        p = chat_prompt("q")
        question, context, llm = c._memo.get(p, LLM)
        evil = {"v": 1, "g": [{"t": "cg", "info": None, "m": {
            "t": "ai", "content": "x", "ak": {"x": {"lc": 1, "type": "constructor",
                                                    "id": ["os", "system"], "kwargs": {}}},
            "rm": {}, "name": None, "tc": [], "itc": [], "um": None}}]}
        c.cache.store(question, evil, context=context, llm_string=llm)
        assert c.lookup(p, LLM) is None
        assert len(events) == 1 and events[0].tier == "l1"
        assert c.cache.lookup(question, context=context, llm_string=llm) is None  # deleted
        assert c.cache.l2.count() == 0  # type: ignore[union-attr]


def test_clear_is_per_namespace() -> None:
    with RagCache(CacheConfig()) as core:
        a, b = RagLLMCache(core, namespace="a"), RagLLMCache(core, namespace="b")
        a.update("p", LLM, [Generation(text="a")])
        b.update("p", LLM, [Generation(text="b")])
        a.clear()
        assert a.lookup("p", LLM) is None
        assert b.lookup("p", LLM) == [Generation(text="b")]


async def test_async_paths() -> None:
    async with RagLLMCache(CacheConfig()) as c:
        p = chat_prompt("q")
        assert await c.alookup(p, LLM) is None
        await c.aupdate(p, LLM, answer())
        got = await c.alookup(p, LLM)
        assert got is not None and got[0].text == "Paris"
        await c.aupdate(p + "x", LLM, [Generation(text="x", generation_info={"t": object()})])
        assert len(c.cache.flights) == 0
        await c.aclear()
        assert await c.alookup(p, LLM) is None


def test_every_generation_is_stored() -> None:
    with RagLLMCache(CacheConfig()) as c:
        gens = [ChatGeneration(message=AIMessage(t)) for t in ("one", "two", "three")]
        c.update(chat_prompt("q"), LLM, gens)
        got = c.lookup(chat_prompt("q"), LLM)
        assert [g.text for g in got] == ["one", "two", "three"]  # type: ignore[union-attr]
        # Stored as plain JSON data in the core (no pickled objects anywhere).
        question, context, llm = c._memo.get(chat_prompt("q"), LLM)
        raw = c.cache.lookup(question, context=context, llm_string=llm).value  # type: ignore[union-attr]
        assert json.loads(json.dumps(raw)) == raw


async def test_oversize_prompts_are_never_cached_and_never_raise() -> None:
    with RagLLMCache(CacheConfig(max_question_chars=10)) as c:
        p = chat_prompt("a question far longer than ten characters")
        assert c.lookup(p, LLM) is None
        c.update(p, LLM, answer())
        assert c.lookup(p, LLM) is None
        assert await c.alookup(p, LLM) is None
        await c.aupdate(p, LLM, answer())
