"""Split the prompts LangChain hands a cache into (question, context).

LLMs pass the prompt string itself: all of it is the question.  Chat models pass
``dumps(messages)``: the last human message is the question, everything else (system
prompt, earlier turns, tool calls and results, what follows the question) is the
context.  Only JSON is read here; nothing is ever revived with ``loads``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["PromptMemo", "parse_prompt", "split_content"]

# Class name -> role, for the message classes ``dumps`` writes.
_ROLES = {
    "HumanMessage": "human", "HumanMessageChunk": "human",
    "AIMessage": "ai", "AIMessageChunk": "ai",
    "SystemMessage": "system", "SystemMessageChunk": "system",
    "ToolMessage": "tool", "ToolMessageChunk": "tool",
    "FunctionMessage": "function", "FunctionMessageChunk": "function",
    "ChatMessage": "chat", "ChatMessageChunk": "chat",
}
# Never sent to a model, different on every run: they must not split the partition.
_VOLATILE = frozenset({"id", "response_metadata", "usage_metadata"})
_TOOL_CALL_LISTS = ("tool_calls", "invalid_tool_calls", "tool_call_chunks")
# orjson reads integers beyond 64 bits as floats, which could make two different
# numbers one context: prompts with 20 or more digits in a row take the stdlib parser.
# (Splitting on non-digits is several times faster than searching for r"\d{20}".)
_NON_DIGITS = re.compile(r"[^0-9]+")


def _parse_json(text: str) -> Any:
    if max(map(len, _NON_DIGITS.split(text))) < 20:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # NaN, escaped lone surrogates: the stdlib reads them
            pass
    return json.loads(text)


def _context_text(context: list[dict[str, Any]]) -> str:
    try:
        return orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):  # NaN, huge integers, lone surrogates
        return json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _messages(data: Any) -> list[tuple[str, str, dict[str, Any]]] | None:
    """[(class name, role, kwargs)] when ``data`` is a serialized message list."""
    if not isinstance(data, list) or not data:
        return None
    out: list[tuple[str, str, dict[str, Any]]] = []
    for item in data:
        if not (isinstance(item, dict) and item.get("lc") == 1
                and item.get("type") == "constructor"):
            return None
        ids, kwargs = item.get("id"), item.get("kwargs")
        if not (isinstance(ids, list) and ids and isinstance(ids[-1], str)
                and isinstance(kwargs, dict)):
            return None
        role = _ROLES.get(ids[-1])
        if role is None:
            return None
        out.append((ids[-1], role, kwargs))
    return out


def _is_question(role: str, kwargs: dict[str, Any]) -> bool:
    return role == "human" or (role == "chat" and kwargs.get("role") == "user")


def split_content(content: Any) -> tuple[str, list[Any]]:
    """(text of the question, non-text parts such as images, which go to the context)."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return "", [content]
    texts: list[str] = []
    extras: list[Any] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif (isinstance(block, dict) and isinstance(block.get("text"), str)
              and block.get("type", "text") == "text"):
            texts.append(block["text"])
        else:
            extras.append(block)
    return "".join(texts), extras


def _tool_call_ids(messages: list[tuple[str, str, dict[str, Any]]]) -> dict[str, str]:
    """Provider tool-call ids are random per run; number them by first appearance."""
    ids: dict[str, str] = {}
    for _, _, kwargs in messages:
        for name in _TOOL_CALL_LISTS:
            calls = kwargs.get(name)
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict) and isinstance(call.get("id"), str):
                        ids.setdefault(call["id"], f"#{len(ids)}")
        tc = kwargs.get("tool_call_id")
        if isinstance(tc, str):
            ids.setdefault(tc, f"#{len(ids)}")
    return ids


def _renamed(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, dict):
        return {k: _renamed(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, ids) for v in value]
    return value


def parse_prompt(prompt: str) -> tuple[str, str]:
    """(question, context) of a prompt; context is "" for a plain LLM prompt."""
    # dumps() output starts with '[{"lc": 1'; anything else is a plain prompt.
    if not (prompt.startswith("[{") and '"lc"' in prompt[:8]):
        return prompt, ""
    try:
        messages = _messages(_parse_json(prompt))
    except (ValueError, RecursionError):
        messages = None
    if messages is None:
        return prompt, ""
    try:
        return _split(messages)
    except RecursionError:  # nested deeper than a context can be written: a plain prompt
        return prompt, ""


def _split(messages: list[tuple[str, str, dict[str, Any]]]) -> tuple[str, str]:
    ids = _tool_call_ids(messages)
    q_index = -1
    for i in range(len(messages) - 1, -1, -1):
        if _is_question(messages[i][1], messages[i][2]):
            q_index = i
            break
    question = ""
    context: list[dict[str, Any]] = []
    for i, (cls, _, kwargs) in enumerate(messages):
        item = {k: v for k, v in kwargs.items() if k not in _VOLATILE}
        item["@class"] = cls
        if i == q_index:
            question, extras = split_content(item.pop("content", ""))
            item["@question"] = True
            if extras:
                item["@extras"] = extras
        context.append(_renamed(item, ids) if ids else item)
    return question, _context_text(context)


class PromptMemo:
    """(prompt, llm_string) -> (question, context, llm_string), so an exact repeat never
    parses JSON again.  The stored llm_string is the first-seen string object: its hash is
    cached, which makes the core's own key memo cheaper too.  Bounded by characters."""

    __slots__ = ("_chars", "_data", "max_chars", "max_prompt_chars")

    def __init__(self, *, max_chars: int = 32_000_000, max_prompt_chars: int = 256_000) -> None:
        self._data: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._chars = 0
        self.max_chars = max_chars
        self.max_prompt_chars = max_prompt_chars

    def get(self, prompt: str, llm_string: str) -> tuple[str, str, str]:
        key = (prompt, llm_string)
        found = self._data.get(key)
        if found is not None:
            return found
        question, context = parse_prompt(prompt)
        found = (question, context, llm_string)
        size = len(prompt) + len(llm_string) + len(question) + len(context)
        if len(prompt) <= self.max_prompt_chars:
            if self._chars + size > self.max_chars:
                # Clearing beats LRU bookkeeping on every hit; refills cost one parse each.
                self._data.clear()
                self._chars = 0
            self._data[key] = found
            self._chars += size
        return found

    def clear(self) -> None:
        self._data.clear()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._data)
