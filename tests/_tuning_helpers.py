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


# -- a semantic workload with known cosines ------------------------------------------------

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu")


class TableEmbedder:
    """``list[str] -> array``: base questions get random unit vectors; a question
    registered as a variant of one sits at an exact cosine from it."""

    model_id = "table-embedder"

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        import numpy as np

        self.np = np
        self.dim = dim
        self.rng = np.random.default_rng(seed)
        self.table: dict[str, Any] = {}

    def _unit(self) -> Any:
        v = self.rng.standard_normal(self.dim)
        return v / self.np.linalg.norm(v)

    def base(self, text: str) -> None:
        self._new(text)
        self.table[text] = self._unit()

    def _new(self, text: str) -> None:
        # The cache memoises embeddings: a text must never change its vector.
        if text in self.table:
            raise ValueError(f"{text!r} already has a vector")

    def variant(self, text: str, of: str, cosine: float) -> None:
        self._new(text)
        b = self.table[of]
        u = self._unit()
        u -= u.dot(b) * b
        u /= self.np.linalg.norm(u)
        self.table[text] = cosine * b + (1 - cosine ** 2) ** 0.5 * u

    def __call__(self, texts: list[str]) -> Any:
        for t in texts:
            if t not in self.table:
                self.base(t)
        return self.np.stack([self.table[t] for t in texts]).astype("float32")


def semantic_conversations(emb: TableEmbedder, n: int, rng: random.Random, *,
                           paraphrase: float = 0.975, look_alike: float = 0.93
                           ) -> Iterator[tuple[str, str, str]]:
    """``n`` (question, paraphrase, look-alike) triples at the given cosines from the
    question, each text new.  At the defaults, the balanced threshold (0.902) lets
    both variants match and a threshold above 0.93 only the paraphrase."""
    combos = [(a, b, c) for a in WORDS for b in WORDS for c in WORDS if len({a, b, c}) == 3]
    rng.shuffle(combos)
    made = 0
    for a, b, c in combos:
        d = WORDS[(WORDS.index(c) + 1) % len(WORDS)]
        base = f"how do i configure {a} with {b} and {c}"
        para = f"how would i configure {a} with {b} and {c}"
        alike = f"how do i configure {a} with {b} or {d}"
        if any(t in emb.table for t in (base, para, alike)):
            continue  # used by an earlier workload on this embedder
        if made == n:
            return
        made += 1
        emb.base(base)
        emb.variant(para, base, paraphrase)
        emb.variant(alike, base, look_alike)
        yield base, para, alike
