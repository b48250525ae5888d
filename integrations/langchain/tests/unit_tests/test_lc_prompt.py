"""Prompt parsing: plain prompts, serialized chat prompts, volatile fields, memo."""

from __future__ import annotations

import json

from langchain_core.load import dumps
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_rag_cache._prompt import PromptMemo, parse_prompt


def chat(*messages: object) -> str:
    return dumps(list(messages))


def test_plain_prompt_is_all_question() -> None:
    assert parse_prompt("Tell me a joke") == ("Tell me a joke", "")
    assert parse_prompt('[{"not": "messages"}]') == ('[{"not": "messages"}]', "")
    assert parse_prompt('[{"lc": 1, broken') == ('[{"lc": 1, broken', "")
    # A constructor of something that is not a message: not a chat prompt.
    odd = '[{"lc": 1, "type": "constructor", "id": ["x", "Evil"], "kwargs": {}}]'
    assert parse_prompt(odd) == (odd, "")


def test_last_human_message_is_the_question() -> None:
    q, ctx = parse_prompt(chat(SystemMessage("Be terse."), HumanMessage("Hi"),
                               AIMessage("Hello!"), HumanMessage("What is 2+2?")))
    assert q == "What is 2+2?"
    data = json.loads(ctx)
    assert [m["@class"] for m in data] == ["SystemMessage", "HumanMessage", "AIMessage",
                                           "HumanMessage"]
    assert data[-1] == {"@class": "HumanMessage", "@question": True, "type": "human"}
    assert "What is 2+2?" not in ctx  # the question is not part of the context


def test_context_separates_system_prompts_and_histories() -> None:
    base = parse_prompt(chat(SystemMessage("Be terse."), HumanMessage("Q?")))
    other_system = parse_prompt(chat(SystemMessage("Be verbose."), HumanMessage("Q?")))
    with_history = parse_prompt(chat(SystemMessage("Be terse."), HumanMessage("Hi"),
                                     AIMessage("Hello"), HumanMessage("Q?")))
    assert base[0] == other_system[0] == with_history[0] == "Q?"
    assert len({base[1], other_system[1], with_history[1]}) == 3


def test_volatile_fields_do_not_split_the_context() -> None:
    a = chat(HumanMessage("Hi", id="m1"),
             AIMessage("Hello", id="run-1", response_metadata={"model_name": "x", "created": 1},
                       usage_metadata={"input_tokens": 1, "output_tokens": 1,
                                       "total_tokens": 2}),
             HumanMessage("Q?", id="m2"))
    b = chat(HumanMessage("Hi", id="m9"),
             AIMessage("Hello", id="run-2", response_metadata={"model_name": "x", "created": 2}),
             HumanMessage("Q?"))
    assert parse_prompt(a) == parse_prompt(b)


def test_tool_call_ids_are_renumbered_consistently() -> None:
    def conv(call_id: str, result: str = "42") -> str:
        return chat(HumanMessage("Compute"),
                    AIMessage("", tool_calls=[{"name": "calc", "args": {"x": 1}, "id": call_id}]),
                    ToolMessage(result, tool_call_id=call_id), HumanMessage("And now?"))

    assert parse_prompt(conv("call_a")) == parse_prompt(conv("call_b"))
    assert parse_prompt(conv("call_a"))[1] != parse_prompt(conv("call_a", "43"))[1]
    assert "call_a" not in parse_prompt(conv("call_a"))[1]


def test_multimodal_question_keeps_images_in_the_context() -> None:
    def ask(url: str) -> tuple[str, str]:
        return parse_prompt(chat(HumanMessage(content=[
            {"type": "text", "text": "What is in "}, {"type": "text", "text": "this image?"},
            {"type": "image_url", "image_url": {"url": url}}])))

    q1, c1 = ask("http://a/1.png")
    q2, c2 = ask("http://a/2.png")
    assert q1 == q2 == "What is in this image?"
    assert c1 != c2


def test_chat_message_with_user_role_is_a_question_and_no_human_is_empty() -> None:
    assert parse_prompt(chat(ChatMessage(role="user", content="Q?")))[0] == "Q?"
    q, ctx = parse_prompt(chat(SystemMessage("Only a system prompt")))
    assert q == "" and "Only a system prompt" in ctx


def test_numbers_beyond_64_bits_and_odd_json_keep_contexts_apart() -> None:
    """The fast parser reads integers beyond 64 bits as floats; such prompts (and ones
    it refuses) take the exact parser, so two different numbers never share a context."""
    def calling(order_id: int) -> str:
        return chat(AIMessage("", tool_calls=[{"name": "get_order", "id": "c1",
                                                 "args": {"order_id": order_id}}]),
                    ToolMessage("found", tool_call_id="c1"), HumanMessage("Status?"))
    big = 10**22
    contexts = {parse_prompt(calling(n))[1] for n in (big, big + 1, 2**64, 2**64 + 1, 7)}
    assert len(contexts) == 5
    assert str(big + 1) in parse_prompt(calling(big + 1))[1]
    # A lone surrogate (valid JSON escape, not valid UTF-8) still parses.
    q, ctx = parse_prompt(chat(SystemMessage("\ud800 odd"), HumanMessage("Q?")))
    assert q == "Q?" and ctx != parse_prompt(chat(SystemMessage("odd"), HumanMessage("Q?")))[1]


def test_memo_returns_the_same_objects_and_is_bounded() -> None:
    memo = PromptMemo(max_chars=2_000)
    prompt = chat(SystemMessage("S"), HumanMessage("Q?"))
    llm = "model-a"
    first = memo.get(prompt, llm)
    again = memo.get((prompt + " ")[:-1], (llm + " ")[:-1])  # equal, not identical
    assert again is first and again[2] is first[2]
    for i in range(200):
        memo.get(f"prompt {i}", llm)
    assert len(memo) < 200  # the character budget cleared it
    assert memo.get(prompt, llm) == first
