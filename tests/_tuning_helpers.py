"""Shared pieces of the tuner tests: an injected clock, a real cache (memory + a
real SQLite file) with analytics and a tuner on it, and deterministic workloads.
Windows advance with the fake clock; nothing sleeps."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_cache_plugin import CacheConfig, RagCache
from rag_cache_plugin.analytics import CacheAnalytics
from rag_cache_plugin.tuning import CacheTuner, TuningReport


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Rig:
    cache: RagCache
    analytics: CacheAnalytics
    tuner: CacheTuner
    clock: FakeClock
    reports: list[TuningReport] = field(default_factory=list)

    def serve(self, questions: Iterable[str], dt: float = 0.5) -> None:
        """Each question: look it up, and on a miss compute and store the answer
        (what a chain with this cache does)."""
        cache, clock = self.cache, self.clock
        for q in questions:
            clock.advance(dt)
            if cache.lookup(q) is None:
                cache.store(q, f"answer to {q}")

    def window(self, questions: Iterable[str], dt: float = 0.5) -> TuningReport:
        self.serve(questions, dt)
        report = self.tuner.apply_tuning()
        self.reports.append(report)
        return report

    def close(self) -> None:
        self.tuner.close()
        self.analytics.close(capture=False)
        self.cache.close()


def make_rig(tmp_path: Path, *, clock: FakeClock | None = None, analytics_store: bool = True,
             tuner: dict[str, Any] | None = None, **config: Any) -> Rig:
    clock = clock or FakeClock()
    cache = RagCache(CacheConfig(sqlite_path=tmp_path / "cache.db", **config), clock=clock)
    analytics = CacheAnalytics(cache, autostart=False, redis_publish=False,
                               store_path=tmp_path / "cache.analytics.db" if analytics_store
                               else None)
    t = CacheTuner(cache, analytics, clock=clock, **(tuner or {}))
    return Rig(cache, analytics, t, clock)


# -- workloads ----------------------------------------------------------------------


def rounds(keys: list[str], n: int, rng: random.Random) -> Iterator[str]:
    """``n`` rounds over ``keys``, each in a new random order."""
    for _ in range(n):
        order = keys[:]
        rng.shuffle(order)
        yield from order


def uniform(keys: list[str], n: int, rng: random.Random) -> list[str]:
    return [rng.choice(keys) for _ in range(n)]


def scan_heavy(hot: list[str], n_blocks: int, block: int, rng: random.Random,
               counter: Callable[[], int]) -> list[str]:
    """Blocks of hot lookups, each followed by a one-pass scan of as many new keys."""
    out: list[str] = []
    for _ in range(n_blocks):
        out += [rng.choice(hot) for _ in range(block)]
        start = counter()
        out += [f"scan {start + i}" for i in range(block)]
    return out


def first_window(reports: list[TuningReport], metric: str, at_least: float) -> int | None:
    """1-based index of the first window whose ``metric`` reached ``at_least``."""
    for i, r in enumerate(reports, 1):
        value = r.metrics.get(metric)
        if value is not None and value >= at_least:
            return i
    return None
