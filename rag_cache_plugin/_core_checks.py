"""Checks of what callers pass: namespaces, tags and contexts; ``_Oversize`` signals a
question longer than the configuration allows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


class _Oversize(Exception):
    pass


def _context_text(context: Any) -> str:
    if isinstance(context, str):
        return context
    try:
        return json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: too deep
        raise ValueError(f"context must be a string or JSON data: {exc!r}") from exc


def _is_text(value: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates).  Namespaces and tags are stored as
    text in SQLite and Redis: one that cannot be encoded would fail inside a tier,
    where it would count against the tier's breaker instead of naming the mistake."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_ns(ns: Any) -> str:
    if not isinstance(ns, str) or not ns or len(ns) > 256 or not _is_text(ns):
        raise ValueError("namespace must be a non-empty string of at most 256 characters "
                         "(valid Unicode, no lone surrogates)")
    return ns


def _check_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str | bytes):
        raise ValueError("tags must be a list of strings, not a single string")
    out = tuple(tags)
    if not all(isinstance(t, str) and _is_text(t) for t in out):
        raise ValueError("tags must be strings of valid Unicode (no lone surrogates)")
    return out
