"""What the last cached call in this context did, for the event handlers.

A wrapper notes its outcome just before it returns; the handlers read it at the
matching end event (instrumentation ``QueryEndEvent`` / ``RetrievalEndEvent``, a
legacy callback's event end), which LlamaIndex emits in the same context right
after.  A context variable keeps concurrent queries (threads, asyncio tasks) apart, and
each handler takes an outcome at most once (both handlers may be attached).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Outcome", "clear", "note", "take", "take_any"]

Op = Literal["retrieval", "query"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One wrapper call: a hit (served from the cache) or a miss (computed)."""

    op: Op
    question: str
    hit: bool
    namespace: str
    context: str
    llm_string: str
    key: str = ""
    tier: str = ""
    kind: str = ""
    score: float = 0.0
    taken: set[int] = field(default_factory=set, compare=False, repr=False)
    """Ids of the handlers that took it already."""


_last: ContextVar[Outcome | None] = ContextVar("llama_index_rag_cache_outcome", default=None)


def note(outcome: Outcome) -> None:
    _last.set(outcome)


def clear() -> None:
    if _last.get() is not None:
        _last.set(None)


def take(op: Op, question: str, by: object) -> Outcome | None:
    """The pending outcome if it belongs to this call (same operation and question)
    and ``by`` has not taken it yet; ``by`` cannot take it again."""
    out = _last.get()
    if out is None or out.op != op or out.question != question or id(by) in out.taken:
        return None
    out.taken.add(id(by))
    return out


def take_any(op: Op, by: object) -> Outcome | None:
    """``take`` for ends that do not name the question (a legacy trace's end)."""
    out = _last.get()
    if out is None or out.op != op or id(by) in out.taken:
        return None
    out.taken.add(id(by))
    return out
