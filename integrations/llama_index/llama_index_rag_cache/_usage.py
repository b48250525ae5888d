"""Token counts and model names out of LlamaIndex LLM payloads.

Providers report usage in different places: ``additional_kwargs`` (the OpenAI
integration puts ``prompt_tokens`` / ``completion_tokens`` there), or a ``usage``
object or dict in ``raw``.  Whatever is found first wins; nothing found is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["model_name", "question_of", "token_usage"]

_IN = ("prompt_tokens", "input_tokens", "prompt_token_count")
_OUT = ("completion_tokens", "output_tokens", "candidates_token_count")


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _counts(obj: Any) -> tuple[int, int] | None:
    if obj is None:
        return None
    found_in = next((v for k in _IN if isinstance(v := _get(obj, k), int)), None)
    found_out = next((v for k in _OUT if isinstance(v := _get(obj, k), int)), None)
    if found_in is None and found_out is None:
        return None
    return found_in or 0, found_out or 0


def token_usage(response: Any) -> tuple[int, int]:
    """(input, output) tokens of a ``CompletionResponse`` / ``ChatResponse``."""
    if response is None:
        return 0, 0
    raw = _get(response, "raw")
    for source in (_get(response, "additional_kwargs"), _get(raw, "usage"),
                   _get(raw, "usage_metadata"), raw):
        found = _counts(source)
        if found is not None:
            return found
    return 0, 0


def model_name(model_dict: Any) -> str:
    """The model an LLM or embedding payload names (its class when it names none)."""
    if not isinstance(model_dict, Mapping):
        return ""
    for key in ("model", "model_name", "deployment_name", "class_name"):
        value = model_dict.get(key)
        if isinstance(value, str) and value and value != "unknown":
            return value
    return str(model_dict.get("class_name") or "")


def question_of(query: Any) -> str:
    """The question text of a ``QueryType`` (a string or a ``QueryBundle``)."""
    if isinstance(query, str):
        return query
    text = getattr(query, "query_str", None)
    return text if isinstance(text, str) else ""
