"""Warming tasks: which questions to compute in a run, within a budget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .patterns import QueryPattern, Scoring

if TYPE_CHECKING:
    from .._core import RagCache

__all__ = ["Budget", "TaskKind", "WarmingTask", "plan_tasks", "question_tasks"]

TaskKind = Literal["warm", "refresh"]


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits of one run: tasks, model tokens, US dollars (None: no limit).  Planning
    uses each question's last measured tokens and cost; running stops starting
    tasks once what was really spent reaches a limit."""

    max_tasks: int | None = 50
    max_tokens: int | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_tasks", "max_tokens", "max_cost"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or v < 0):
                raise ValueError(f"{name} must be a non-negative number or None")

    @classmethod
    def of(cls, value: Budget | Mapping[str, Any] | None) -> Budget:
        if value is None:
            return cls()
        return value if isinstance(value, Budget) else cls(**value)


@dataclass(frozen=True, slots=True)
class WarmingTask:
    """One question to compute and cache."""

    question: str
    namespace: str
    key: str
    partition: str
    context: str = ""
    llm_string: str = ""
    kind: TaskKind = "warm"
    score: float = 0.0
    est_tokens: float = 0.0
    est_cost: float = 0.0
    ttl: float | None = None
    tags: tuple[str, ...] = ()
    addressable: bool = True
    """(question, context, llm_string) lead to ``key``, so the warmer can store the
    runner's answer itself; else only a runner that fills the cache can warm it."""
    member_keys: tuple[str, ...] = ()


def _address(cache: RagCache, p: QueryPattern) -> tuple[str, str, bool]:
    """(context, llm_string, addressable): the recorded ones if they lead to the key,
    else empty ones if those do (plain ``RagCache`` use), else the recorded ones."""
    for ctx, llm in ((p.context, p.llm_string), ("", "")):
        if ctx is None or llm is None:
            continue
        try:
            if cache.ref(p.question, context=ctx, llm_string=llm,
                         namespace=p.namespace).key == p.key:
                return ctx, llm, True
        except ValueError:
            break
    return p.context or "", p.llm_string or "", False


def _task(cache: RagCache, p: QueryPattern, kind: TaskKind) -> WarmingTask:
    ctx, llm, ok = _address(cache, p)
    tokens = (p.input_tokens or 0.0) + (p.output_tokens or 0.0)
    return WarmingTask(p.question, p.namespace, p.key, p.partition, ctx, llm, kind, p.score,
                       tokens, p.cost or 0.0, p.lifetime, p.tags, ok, p.member_keys)


def plan_tasks(cache: RagCache, patterns: Sequence[QueryPattern], budget: Budget,
               scoring: Scoring, now: float, *, refresh: bool = True) -> list[WarmingTask]:
    """Best-scoring first, within the budget: uncached patterns expected to be asked
    again, and (``refresh``) cached ones in the last part of their lifetime that are
    still expected to be asked while the refreshed answer lives."""
    candidates: list[WarmingTask] = []
    for p in patterns:
        if not p.cached:
            if p.expected_hits >= scoring.min_expected_hits:
                candidates.append(_task(cache, p, "warm"))
        elif refresh and p.expires is not None and p.lifetime:
            due = p.expires - now <= scoring.refresh_ahead * p.lifetime
            rate = p.expected_hits / (scoring.horizon or cache.default_ttl or scoring.half_life)
            # Worth it when the refreshed answer is expected to serve hits in its lifetime.
            if due and rate * p.lifetime * p.confidence >= scoring.min_expected_hits:
                candidates.append(_task(cache, p, "refresh"))
    candidates.sort(key=lambda t: -t.score)
    out: list[WarmingTask] = []
    tokens = cost = 0.0
    for t in candidates:
        if budget.max_tasks is not None and len(out) >= budget.max_tasks:
            break
        if budget.max_tokens is not None and tokens + t.est_tokens > budget.max_tokens:
            continue  # a cheaper one further down may still fit
        if budget.max_cost is not None and cost + t.est_cost > budget.max_cost:
            continue
        out.append(t)
        tokens, cost = tokens + t.est_tokens, cost + t.est_cost
    return out


def question_tasks(cache: RagCache, questions: Iterable[str | Mapping[str, Any]], *,
                   context: str = "", llm_string: str = "", namespace: str | None = None,
                   ttl: float | None = None, budget: Budget | None = None) -> list[WarmingTask]:
    """Tasks for a list of questions (an FAQ), in order, one per distinct entry.  An
    item may be a mapping with its own ``question``, ``context``, ``llm_string``,
    ``namespace`` and ``ttl``."""
    out: list[WarmingTask] = []
    seen: set[str] = set()
    for item in questions:
        spec = {"question": item} if isinstance(item, str) else dict(item)
        q = spec.get("question")
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"not a question: {item!r}")
        ctx, llm = spec.get("context", context), spec.get("llm_string", llm_string)
        if not isinstance(ctx, str) or not isinstance(llm, str):
            raise ValueError(f"context and llm_string must be strings: {item!r}")
        ref = cache.ref(q, context=ctx, llm_string=llm, namespace=spec.get("namespace", namespace))
        if ref.key in seen:
            continue
        seen.add(ref.key)
        item_ttl = spec.get("ttl", ttl)
        if item_ttl is not None and not isinstance(item_ttl, int | float):
            raise ValueError(f"ttl must be a number of seconds: {item!r}")
        out.append(WarmingTask(q, ref.namespace, ref.key, ref.partition, ctx, llm,
                               ttl=item_ttl, member_keys=(ref.key,)))
        if budget is not None and budget.max_tasks is not None and len(out) >= budget.max_tasks:
            break
    return out
