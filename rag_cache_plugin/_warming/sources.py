"""Questions from a file: plain text (one per line; blank lines and ``#`` comments
skipped), a JSON list, or JSON Lines.  A JSON item is a question string or an object
with ``question`` and optionally ``context``, ``llm_string``, ``namespace``, ``ttl``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_questions"]

_KEYS = frozenset({"question", "context", "llm_string", "namespace", "ttl"})


def _item(value: Any, where: str) -> str | dict[str, Any]:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict) and isinstance(value.get("question"), str):
        unknown = set(value) - _KEYS
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        return {k: v for k, v in value.items() if k in _KEYS}
    raise ValueError(f"{where}: expected a question or an object with one, got {value!r}")


def read_questions(path: str | os.PathLike[str]) -> list[str | dict[str, Any]]:
    """The questions in ``path`` (format from the extension: .json, .jsonl/.ndjson,
    anything else is text)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    if suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{p}: expected a JSON list of questions")
        return [_item(v, f"{p}[{i}]") for i, v in enumerate(data)]
    out: list[str | dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or (suffix not in (".jsonl", ".ndjson") and line.startswith("#")):
            continue
        out.append(_item(json.loads(line), f"{p}:{n}") if suffix in (".jsonl", ".ndjson")
                   else line)
    return out
