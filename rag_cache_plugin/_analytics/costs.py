"""What each cached entry cost to compute, and what hits on it saved.

A hit saves the model call that produced its entry.  That call is learned when
the answer is computed: a framework handler reports the uncached model call
(``CallCompleted``) and the core reports the ``Stored`` entry.  LangChain LLMs
report the call before the cache stores its answer, chat models after; the book
pairs them in either order, preferring, newest first:

1. the same entry key (a handler that knows it should set ``CallCompleted.key``),
2. the same namespace and canonical question,
3. the newest unpaired one of the namespace, if no more than ``fallback_window``
   seconds apart (the two events of one answer follow each other at once).

``CacheAnalytics.record_cost`` says it directly.  Costs are persisted with the
snapshots, so savings survive restarts and are shared by the processes of a host.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .._events import CallCompleted, Stored
from .._keys import canonicalize
from .prices import PriceTable

__all__ = ["CostBook", "EntryCost"]

_PENDING_MAX = 256


class EntryCost(NamedTuple):
    """The call that produced an entry: a hit on the entry saves this much."""

    model: str
    input_tokens: int
    output_tokens: int
    latency: float
    cost: float | None
    """US dollars, or None when the model has no price."""


class _Pending(NamedTuple):
    at: float
    namespace: str
    key: str
    question: str
    cost: EntryCost | None  # None: a store waiting for its call


class CostBook:
    def __init__(self, prices: PriceTable, window: float = 60.0,
                 fallback_window: float = 5.0) -> None:
        self.prices = prices
        self.window = window
        self.fallback_window = fallback_window
        self.costs: dict[str, EntryCost] = {}
        self.max_costs = 200_000
        self.writes: deque[tuple[str, str, EntryCost]] = deque()
        self._no_cost: set[str] = set()
        self._calls: deque[_Pending] = deque(maxlen=_PENDING_MAX)
        self._stores: deque[_Pending] = deque(maxlen=_PENDING_MAX)
        self._lock = threading.Lock()

    def entry_cost(self, model: str, input_tokens: int, output_tokens: int,
                   latency: float) -> EntryCost:
        return EntryCost(model, input_tokens, output_tokens, latency,
                         self.prices.cost(model, input_tokens, output_tokens))

    def _match(self, pending: deque[_Pending], key: str, namespace: str, question: str,
               now: float) -> _Pending | None:
        """Take the best partner from ``pending`` (see the module docstring)."""
        horizon = now - self.window
        while pending and pending[0].at < horizon:
            pending.popleft()
        items = [p for p in reversed(pending)
                 if not namespace or p.namespace in (namespace, "")]
        found = (next((p for p in items if key and p.key == key), None)
                 or next((p for p in items if question and p.question == question), None)
                 or next((p for p in items if now - p.at <= self.fallback_window
                          and not (key and p.key)), None))
        if found is not None:
            pending.remove(found)
        return found

    def on_call(self, ev: CallCompleted) -> EntryCost:
        """An uncached, successful model call: pair it with its stored answer."""
        cost = self.entry_cost(ev.model, ev.input_tokens, ev.output_tokens, ev.latency)
        question = canonicalize(ev.question) if ev.question else ""
        now = time.monotonic()
        with self._lock:
            stored = self._match(self._stores, ev.key, ev.namespace, question, now)
            if stored is None:
                self._calls.append(_Pending(now, ev.namespace, ev.key, question, cost))
                return cost
        self.remember(stored.key, stored.namespace, cost)
        return cost

    def on_stored(self, ev: Stored) -> None:
        question = canonicalize(ev.question) if ev.question else ""
        now = time.monotonic()
        with self._lock:
            call = self._match(self._calls, ev.key, ev.namespace, question, now)
            if call is None or call.cost is None:
                self._stores.append(_Pending(now, ev.namespace, ev.key, question, None))
                return
        self.remember(ev.key, ev.namespace, call.cost)

    def remember(self, key: str, namespace: str, cost: EntryCost, *, persist: bool = True) -> None:
        """Know ``key``'s cost from now on (and write it to the store at the next tick)."""
        with self._lock:
            if key not in self.costs and len(self.costs) >= self.max_costs:
                self.costs.pop(next(iter(self.costs)))  # the oldest: dicts keep insertion order
            self.costs[key] = cost
            self._no_cost.discard(key)
        if persist:
            self.writes.append((key, namespace, cost))

    def take_writes(self) -> list[tuple[str, str, EntryCost]]:
        q = self.writes
        return [q.popleft() for _ in range(len(q))]

    def price(self, keys: Iterable[str],
              lookup: Callable[[Iterable[str]], dict[str, EntryCost]] | None) -> dict[str, float]:
        """Savings of hits on ``keys`` (one per hit), asking ``lookup`` (the store)
        about keys this process never saw computed."""
        counts = Counter(keys)  # counted in C: a second of hits is a few ms
        unknown = [k for k in counts if k not in self.costs and k not in self._no_cost]
        found = lookup(unknown) if lookup is not None and unknown else {}
        for k in unknown:
            if k in found:
                self.remember(k, "", found[k], persist=False)
            elif len(self._no_cost) < 100_000:
                self._no_cost.add(k)  # asked once per interval at most (see forget_unknown)
        out = dict.fromkeys(("saved.hits", "saved.input_tokens", "saved.output_tokens",
                             "saved.cost", "saved.model_latency"), 0.0)
        for k, n in counts.items():
            c = self.costs.get(k)
            if c is None:
                continue
            out["saved.hits"] += n
            out["saved.input_tokens"] += n * c.input_tokens
            out["saved.output_tokens"] += n * c.output_tokens
            out["saved.cost"] += n * (c.cost or 0.0)
            out["saved.model_latency"] += n * c.latency
        return out

    def forget_unknown(self) -> None:
        self._no_cost.clear()
