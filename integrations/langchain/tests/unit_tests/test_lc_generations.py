"""Generations through the allow-listed JSON form: round trips, refusals, corrupt
payloads, and fresh copies per hit."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)
from langchain_rag_cache._generations import (
    MARK,
    BadPayload,
    Template,
    Unsupported,
    decode,
    encode,
)
from pydantic import BaseModel


class Answer(BaseModel):
    city: str
    population: int


def roundtrip(gens: list[Any]) -> list[Any]:
    # Through real JSON text, as every tier but L1 does.
    return decode(json.loads(json.dumps(encode(gens))))


def rich_message() -> AIMessage:
    return AIMessage(
        content="",
        additional_kwargs={"refusal": None, "parsed": {"city": "Paris", "population": 2}},
        response_metadata={"model_name": "gpt-x", "finish_reason": "tool_calls",
                           "logprobs": {"content": [{"token": "a", "logprob": -0.1}]}},
        tool_calls=[{"name": "Answer", "args": {"city": "Paris", "population": 2},
                     "id": "call_1", "type": "tool_call"}],
        invalid_tool_calls=[{"name": "bad", "args": "{oops", "id": "call_2",
                             "error": "bad json", "type": "invalid_tool_call"}],
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                        "input_token_details": {"cache_read": 3}},
        name="assistant",
    )


@pytest.mark.parametrize("gens", [
    [Generation(text="a", generation_info={"reason": "test", "n": [1, 2]})],
    [Generation(text="a"), Generation(text="b", generation_info={"finish_reason": "stop"})],
    [GenerationChunk(text="chunk", generation_info={"k": 1})],
    [ChatGeneration(message=AIMessage("Paris"))],
    [ChatGeneration(message=rich_message(), generation_info={"finish_reason": "stop"})],
    [ChatGeneration(message=AIMessage(content=[{"type": "text", "text": "hi"},
                                               {"type": "reasoning", "reasoning": "r"}]))],
    [ChatGenerationChunk(message=AIMessageChunk(
        content="", tool_call_chunks=[{"name": "f", "args": '{"a": 1}', "id": "c1",
                                       "index": 0, "type": "tool_call_chunk"}],
        chunk_position="last"))],
    [ChatGeneration(message=AIMessage("one")), ChatGeneration(message=AIMessage("two"))],
])
def test_round_trip(gens: list[Any]) -> None:
    assert roundtrip(gens) == gens
    assert [type(g) for g in roundtrip(gens)] == [type(g) for g in gens]


def test_message_id_and_stale_marks_are_not_stored() -> None:
    msg = AIMessage("x", id="run-123", response_metadata={MARK: {"tier": "l1"}, "a": 1})
    (g,) = roundtrip([ChatGeneration(message=msg)])
    assert g.message.id is None
    assert g.message.response_metadata == {"a": 1}


def test_structured_output_models_become_json() -> None:
    msg = AIMessage("", additional_kwargs={"parsed": Answer(city="Oslo", population=1)})
    (g,) = roundtrip([ChatGeneration(message=msg)])
    assert g.message.additional_kwargs["parsed"] == {"city": "Oslo", "population": 1}


class MyGeneration(Generation):
    pass


@pytest.mark.parametrize("gens", [
    [],
    [MyGeneration(text="subclass")],
    [ChatGeneration(message=HumanMessage("not an AI message"))],
    [Generation(text="x", generation_info={"when": object()})],
    [ChatGeneration(message=AIMessage("x", response_metadata={1: "int key"}))],
    [Generation(text="x", generation_info={"m": {"lc": 1, "type": "constructor", "id": ["x"]}})],
    [ChatGeneration(message=AIMessage("x", surprise="extra field"))],
    "not a list",
])
def test_unsupported_generations_are_refused(gens: Any) -> None:
    with pytest.raises(Unsupported):
        encode(gens)


def good() -> dict[str, Any]:
    return json.loads(json.dumps(encode([ChatGeneration(message=rich_message())])))


def _broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    p = good()
    node = p
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return p


def bad_payloads() -> list[Any]:
    marker = {"lc": 1, "type": "constructor", "id": ["langchain", "x", "Evil"], "kwargs": {}}
    m = ("g", 0, "m")
    return [
        None, "text", [], {"v": 2, "g": []}, {"v": 1, "g": []}, {"v": 1, "g": [], "x": 1},
        _broken(("g", 0, "t"), "pickle"),
        _broken((*m, "t"), "human"),
        _broken((*m, "extra"), 1),
        _broken((*m, "ak", "x"), marker),
        _broken((*m, "tc"), [{"name": 3}]),
        _broken((*m, "content"), 5),
        _broken(("g", 0, "t"), "cgc"),  # a chunk generation around a plain message
        _broken(("g", 0, "info"), [1]),
        _broken((*m, "um"), {"input_tokens": "many"}),
    ]


@pytest.mark.parametrize("payload", bad_payloads())
def test_bad_payloads_are_rejected(payload: Any) -> None:
    with pytest.raises(BadPayload):
        decode(payload)


def test_copies_are_fresh_and_marked() -> None:
    gens = [ChatGeneration(message=rich_message(), generation_info={"g": [1]}),
            Generation(text="t", generation_info={"x": {"y": 1}})]
    value = encode(gens)
    t = Template(value, decode(value))
    mark = {"tier": "l2", "kind": "exact", "score": 1.0}
    first = t.make(mark, False)
    assert first[0].message.response_metadata[MARK] == mark
    assert MARK not in (first[1].generation_info or {})
    # Every container is the caller's to mutate.
    first[0].message.tool_calls[0]["args"]["city"] = "Lyon"
    first[0].message.response_metadata["model_name"] = "changed"
    first[0].message.usage_metadata["input_token_details"]["cache_read"] = 99
    first[0].message.additional_kwargs["parsed"]["city"] = "Lyon"
    first[0].generation_info["g"].append(2)
    first[1].generation_info["x"]["y"] = 2
    first[0].message = AIMessage("replaced")  # what LangChain itself does on a hit
    second = t.make({"tier": "l1", "kind": "exact", "score": 1.0}, True)
    expected = copy.deepcopy(gens)
    assert second[0].message.tool_calls == expected[0].message.tool_calls
    assert second[0].message.additional_kwargs == expected[0].message.additional_kwargs
    assert second[0].message.usage_metadata == expected[0].message.usage_metadata
    assert second[0].generation_info == {"g": [1]}
    assert second[0].message.response_metadata[MARK]["tier"] == "l1"
    assert second[1].generation_info == {"x": {"y": 1}, MARK: {"tier": "l1", "kind": "exact",
                                                               "score": 1.0}}
    # Apart from the mark, a copy equals the original.
    second[0].message.response_metadata.pop(MARK)
    assert second[0] == gens[0]
    assert second[0] is not first[0] and second[0].message is not first[0].message


def test_copies_behave_like_validated_models() -> None:
    value = encode([ChatGeneration(message=rich_message())])
    (g,) = Template(value, decode(value)).make(None, False)
    assert g.text == ""
    assert g.message.model_dump() == rich_message().model_copy(update={"id": None}).model_dump()
    g.message.content = "assigned"  # pydantic bookkeeping works on copies
    assert "content" in g.message.model_fields_set
    assert g.message.model_copy(update={"name": "n"}).name == "n"
