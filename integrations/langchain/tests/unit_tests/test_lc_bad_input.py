"""Bad input through ``RagLLMCache``: any prompt LangChain could hand it (plain text,
``dumps(messages)``, malformed, truncated or deeply nested message JSON, lone
surrogates, 10 MB) is a miss or a stored entry, never an exception in the chain; a
stored payload carrying LangChain constructor markers is never revived."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_rag_cache import RagLLMCache

from rag_cache_plugin import CacheConfig, Corrupt, EventBus, RagCache, TierFailed

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
LLM = "[('_type', 'fake'), ('stop', None)]"


def _messages_json(contents: list[str], cut: int | None, depth: int) -> str:
    """``dumps(messages)``-like JSON, each content nested ``depth`` levels deep (built
    as text: the json module cannot write what is that deep), maybe truncated."""
    kinds = ["SystemMessage", "HumanMessage"] * 3
    msgs = []
    for kind, c in zip(kinds, contents, strict=False):
        content = '{"content":[' * depth + json.dumps(c, ensure_ascii=False) + "]}" * depth
        msgs.append('{"lc": 1, "type": "constructor", "id": ["langchain", "schema", '
                    f'"messages", "{kind}"], "kwargs": {{"content": {content}, "type": "x"}}}}')
    text = "[" + ", ".join(msgs) + "]"
    return text if cut is None else text[:cut]


PROMPTS = st.one_of(
    ANY_TEXT,
    st.builds(lambda s, q: dumps([SystemMessage(s), HumanMessage(q)]), ANY_TEXT, ANY_TEXT),
    st.builds(_messages_json, st.lists(ANY_TEXT, min_size=1, max_size=4),
              st.none() | st.integers(0, 300), st.sampled_from([0, 1, 50, 400, 900, 3000])),
    st.sampled_from(['[{"lc": 1', '[{"lc": 1, "type": "constructor"}]', "[{" * 50_000,
                     '[{"lc": 1, "type": "constructor", "id": ["os", "system"], '
                     '"kwargs": {"command": "touch /tmp/rag-cache-pwned"}}]']),
)


@pytest.fixture
def lc_cache(tmp_path: Path) -> Iterator[tuple[RagLLMCache, list[Any]]]:
    bus, seen = EventBus(), list[Any]()
    bus.subscribe(seen.append, (TierFailed, Corrupt))
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db"), bus=bus) as core:
        yield RagLLMCache(core), seen


def test_any_prompt_is_a_miss_or_a_stored_entry(
        lc_cache: tuple[RagLLMCache, list[Any]], figures: Callable[..., str]) -> None:
    cache, seen = lc_cache
    counts = {"examples": 0, "hits": 0}

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(prompt=PROMPTS, llm=ANY_TEXT, text=ANY_TEXT)
    def check(prompt: str, llm: str, text: str) -> None:
        counts["examples"] += 1
        cache.lookup(prompt, llm)
        cache.update(prompt, llm, [Generation(text=text)])
        got = cache.lookup(prompt, llm)
        assert got is not None and got[0].text == text
        counts["hits"] += 1

    check()
    figures("lc-any-prompt", **counts, tier_failed_or_corrupt=len(seen))
    assert seen == []


@pytest.mark.parametrize("depth", [10, 300, 450, 490, 500, 1000, 5000])
def test_deeply_nested_message_json(lc_cache: tuple[RagLLMCache, list[Any]],
                                    depth: int) -> None:
    cache, seen = lc_cache
    prompt = _messages_json(["system text", "the question"], None, depth)
    assert cache.lookup(prompt, LLM) is None
    cache.update(prompt, LLM, [Generation(text="a")])
    got = cache.lookup(prompt, LLM)
    assert got is not None and got[0].text == "a"
    assert seen == []


def test_ten_megabyte_chat_prompt(lc_cache: tuple[RagLLMCache, list[Any]]) -> None:
    cache, seen = lc_cache
    big = dumps([SystemMessage("s" * (10 << 20)), HumanMessage("q" * (10 << 20))])
    assert cache.lookup(big, LLM) is None
    cache.update(big, LLM, [ChatGeneration(message=AIMessage("a"))])  # refused: a miss
    assert cache.lookup(big, LLM) is None
    assert seen == []


def test_planted_constructor_markers_are_never_revived(
        lc_cache: tuple[RagLLMCache, list[Any]]) -> None:
    """Whoever can write the cache can plant any JSON value for a prompt: the adapter
    rebuilds only its allow-list, so constructor markers are a counted, deleted miss."""
    cache, seen = lc_cache
    prompt = dumps([SystemMessage("be brief"), HumanMessage("capital of France?")])
    cache.update(prompt, LLM, [ChatGeneration(message=AIMessage("Paris"))])
    question, context, llm = cache._memo.get(prompt, LLM)
    marker = {"lc": 1, "type": "constructor", "id": ["os", "system"],
              "kwargs": {"command": "touch /tmp/rag-cache-pwned"}}
    planted: list[Any] = [
        marker, [marker], {"v": 1, "g": [marker]},
        {"v": 1, "g": [{"t": "cg", "info": None, "m": marker}]},
        {"v": 1, "g": [{"t": "g", "text": "x", "info": {"k": marker}}]},
        {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]},
    ]
    for value in planted:
        cache.cache.store(question, value, context=context, llm_string=llm,
                          namespace=cache.namespace)
        assert cache.lookup(prompt, LLM) is None, value
        assert cache.cache.lookup(question, context=context, llm_string=llm,
                                  namespace=cache.namespace) is None  # deleted
    assert sum(isinstance(e, Corrupt) for e in seen) == len(planted)
    assert not Path("/tmp/rag-cache-pwned").exists()
