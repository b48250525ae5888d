"""Per-event-type handlers for everything but ``Hit`` (which the listener inlines).
Each runs in the emitting thread and writes only that thread's shard."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._events import (
    BreakerChanged,
    CacheEvent,
    CallCompleted,
    ChainBoundary,
    Cleared,
    Corrupt,
    Evicted,
    Expired,
    FeedbackReported,
    Invalidated,
    Miss,
    QueryObserved,
    Rejected,
    Stored,
    TierFailed,
)
from .costs import CostBook

if TYPE_CHECKING:
    from .recorder import Shard

__all__ = ["dispatch_table"]

_MISSED_CAP = 512
_MODEL_OPS = frozenset({"llm", "chat"})
Handler = Callable[["Shard", Any], None]


def _miss(s: Shard, ev: Miss) -> None:
    s.c["misses"] += 1
    s.observe("miss", ev.latency)
    if ev.question:
        missed = s.missed
        missed[ev.question] = missed.get(ev.question, 0) + 1
        if len(missed) > 2 * _MISSED_CAP:  # keep the most missed; amortized O(log n)
            s.missed = dict(sorted(missed.items(), key=lambda kv: -kv[1])[:_MISSED_CAP])


def _failed(s: Shard, ev: TierFailed) -> None:
    s.c[f"failures.{ev.tier}"] += 1
    s.errors[ev.tier] = f"{ev.op}: {ev.error}"[:300]


def _invalidated(s: Shard, ev: Invalidated) -> None:
    s.c["invalidations"] += 1
    s.c["invalidated"] += ev.count


def _feedback(s: Shard, ev: FeedbackReported) -> None:
    s.c[f"feedback.{ev.kind}.{'ok' if ev.correct else 'wrong'}"] += 1


def _query(s: Shard, ev: QueryObserved) -> None:
    s.c["queries"] += 1
    if ev.cached:
        s.c["queries.cached"] += 1


def _chain(s: Shard, ev: ChainBoundary) -> None:
    s.c["chains"] += 1
    if ev.error:
        s.c["chain_errors"] += 1


def dispatch_table(book: CostBook) -> dict[type[CacheEvent], Handler]:
    def stored(s: Shard, ev: Stored) -> None:
        s.c["stores"] += 1
        for t in ev.tiers:
            s.c[f"stored.{t}"] += 1
        s.observe("store", ev.latency)
        book.on_stored(ev)

    def call(s: Shard, ev: CallCompleted) -> None:
        op = ev.op
        s.c[f"calls.{op}"] += 1
        if ev.cached:
            s.c[f"cached.{op}"] += 1
            return
        if ev.error:
            s.c[f"call_errors.{op}"] += 1
            return
        if op not in _MODEL_OPS:
            s.observe(op, ev.latency)
            return
        s.observe("model", ev.latency)
        cost = book.on_call(ev)
        s.c["spent.input_tokens"] += ev.input_tokens
        s.c["spent.output_tokens"] += ev.output_tokens
        if cost.cost is None:
            s.c["spent.unpriced_calls"] += 1
        else:
            s.c["spent.cost"] += cost.cost

    def count(name: str) -> Handler:
        def handler(s: Shard, ev: Any) -> None:
            s.c[name.format(ev=ev)] += 1
        return handler

    return {
        Miss: _miss, Stored: stored, CallCompleted: call, TierFailed: _failed,
        Evicted: count("evictions.{ev.tier}"), Expired: count("expirations.{ev.tier}"),
        Corrupt: count("corrupt.{ev.tier}"), BreakerChanged: count("breaker.{ev.tier}.{ev.state}"),
        Rejected: count("rejected"), Cleared: count("clears"), Invalidated: _invalidated,
        FeedbackReported: _feedback, QueryObserved: _query, ChainBoundary: _chain,
    }
