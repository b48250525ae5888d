"""``CacheTuner``: lifecycle and public API (windows, boundaries, background thread).
The per-window decisions live in ``loop.Brain``."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from .._analytics.metrics import MetricSnapshot
from .._events import CacheEvent, ChainBoundary
from .bounds import TuningBounds
from .history import Decision, TuningHistory, default_history_path
from .knobs import Knobs
from .loop import Brain, TuningReport
from .need import TuningNeed
from .rules import DEFAULT_RULES, TuningRule, load_rules
from .semantic import semantic_knob
from .signals import Signals
from .strategies import Learner, Strategy, get_strategy
from .window import tuner_metrics, window_delta

__all__ = ["CacheTuner"]

_log = logging.getLogger("rag_cache_plugin.tuning")


class CacheTuner:
    """Tunes a live ``RagCache`` from evidence: analytics windows, re-requests after
    expiry, and shadow simulations of the recent L1 lookups.

    Each ``apply_tuning()`` closes an evaluation window (once it holds the strategy's
    ``min_lookups``), judges the change under evaluation (keeping it or rolling it
    back), and makes at most one new change: one experiment at a time, so every
    change has its own before and after.  ``dry_run=True`` only records
    recommendations.  Windows are closed by calls, by ``ChainBoundary`` events (at
    most once per ``interval`` seconds of ``clock``) and by ``start()``'s thread.

    ``cache``: a ``RagCache`` (or a wrapper holding one as ``.cache``, such as
    ``RagLLMCache``).  ``analytics``: a ``CacheAnalytics`` on the cache (None: a
    private one without a store).  ``history_path``: the SQLite history ("auto":
    beside the analytics store, else in memory; None: in memory).  ``sample_size``:
    keys kept for shadow simulation; sampling is spatial so miniature caches stay
    under ``sample_size / 16`` entries.  ``seed``: the adaptive strategy's exploration.
    ``on_boundary=False``: ignore ``ChainBoundary`` events.
    """

    def __init__(self, cache: Any, analytics: Any = None, *,
                 strategy: str | Strategy = "balanced", bounds: TuningBounds | None = None,
                 rules: Iterable[TuningRule | Mapping[str, Any]] | None = None,
                 dry_run: bool = False,
                 history_path: str | os.PathLike[str] | Literal["auto"] | None = "auto",
                 clock: Callable[[], float] = time.time, interval: float = 60.0,
                 sample_size: int = 16_384, seed: int | None = 0,
                 on_boundary: bool = True) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        if not hasattr(cache, "l1") and hasattr(getattr(cache, "cache", None), "l1"):
            cache = cache.cache  # a framework wrapper (RagLLMCache): tune the core under it
        self.cache = cache
        self.bus = cache.bus
        self._own_analytics = analytics is None
        if analytics is None:
            from .._analytics.engine import CacheAnalytics

            analytics = CacheAnalytics(cache, store_path=None, autostart=False,
                                       redis_publish=False)
        self.analytics = analytics
        self.strategy = get_strategy(strategy)
        self.rules = load_rules(DEFAULT_RULES if rules is None else rules)
        self.dry_run = dry_run
        self.clock = clock
        self.interval = interval
        self.bounds = (bounds or TuningBounds()).resolved(
            ttl=cache.default_ttl, l1_entries=cache.l1.max_entries,
            l1_bytes=cache.l1.max_bytes)
        self.knobs = Knobs(cache, self.bounds, semantic_knob(cache))
        top = max(self.bounds.max_l1_entries or cache.l1.max_entries, 1)
        self.signals = Signals(sample_size=sample_size,
                               rate=min(1.0, sample_size / 16 / top))
        self.signals.attach(self.bus)
        if history_path == "auto":
            store = getattr(analytics, "store", None)
            history_path = default_history_path(store.path if store is not None else None)
        self.store = TuningHistory(history_path)
        self.proc = str(getattr(analytics, "proc", f"{os.getpid()}"))
        learner = Learner(explore=self.strategy.explore, seed=seed,
                          stats=self.store.load_stats())
        self.brain = Brain(self, learner)
        self._prev: MetricSnapshot | None = analytics.totals()
        self._window_start = clock()
        self._last_boundary = self._window_start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._unsubscribe = (self.bus.subscribe(self._boundary, (ChainBoundary,))
                             if on_boundary else None)

    # -- public API ---------------------------------------------------------------------

    @property
    def history(self) -> list[Decision]:
        """This tuner's decisions, oldest first (``store.decisions()`` has every
        process's, persisted)."""
        return list(self.brain.decisions)

    def settings(self) -> dict[str, Any]:
        """The tunable settings now, with the strategy and bounds (what the history
        records with each window)."""
        out = self.knobs.config()
        out.update(strategy=self.strategy.name, dry_run=self.dry_run,
                   bounds=self.bounds.to_dict())
        return out

    def get_current_config(self) -> dict[str, Any]:
        """The settings now, how the tuner is set up, and the change under evaluation."""
        out = self.settings()
        out.update(window=self.brain.window, evaluating=self.brain.pending_dict())
        return out

    def analyze_tuning_need(self, metrics: MetricSnapshot | Mapping[str, float | None]
                            | None = None) -> TuningNeed:
        """Whether tuning is needed and why.  ``metrics``: a ``MetricSnapshot`` (the
        tuner adds its live signals: shadow simulation of the current sample; misses
        after expiry are estimated from the snapshot's expirations), a dict of
        metrics (taken as they are), or None (the window open now)."""
        shadow = None
        if isinstance(metrics, MetricSnapshot):
            shadow = self.brain.shadow(metrics)
            values = tuner_metrics(metrics, None, l2_max_bytes=self.l2_max_bytes(), shadow=shadow,
                                   shadow_idle=shadow is None)
            values.update(self.knobs.extra_metrics(values))
        elif metrics is None:
            with self._lock:
                snap = window_delta(self.analytics.totals(), self._prev, ts=self.clock(),
                                    interval=self.clock() - self._window_start)
            shadow = self.brain.shadow(snap)
            values = tuner_metrics(snap, self.signals.peek(), l2_max_bytes=self.l2_max_bytes(),
                                   shadow=shadow, shadow_idle=shadow is None)
            values.update(self.knobs.extra_metrics(values))
        else:  # the caller's numbers win; knob-derived ones (the semantic bound) fill in
            values = {**self.knobs.extra_metrics(metrics), **metrics}
        return self.brain.need(values, shadow)

    def apply_tuning(self, *, force: bool = False) -> TuningReport:
        """Close the current window and act on it (see the class docstring).
        ``force``: close it even with fewer lookups than the strategy wants (its
        metrics are then only recorded, never acted on)."""
        with self._lock:
            return self._tick(force)

    def _tick(self, force: bool) -> TuningReport:
        now = self.clock()
        current = self.analytics.totals()
        snap = window_delta(current, self._prev, ts=now, interval=now - self._window_start)
        if snap.lookups < self.strategy.min_lookups and not force:
            return TuningReport(self.brain.window, "collecting", lookups=snap.lookups)
        self._prev, self._window_start = current, now
        return self.brain.close_window(snap, self.signals.take(), now)

    def l2_max_bytes(self) -> int | None:
        l2 = getattr(self.cache, "l2", None)
        return getattr(l2, "max_bytes", None) if l2 is not None else None

    # -- chain boundaries and the background thread ---------------------------------------

    def _boundary(self, ev: CacheEvent) -> None:
        now = self.clock()
        if now - self._last_boundary < self.interval:
            return
        if not self._lock.acquire(blocking=False):
            return  # another boundary or the thread is tuning right now
        try:
            self._last_boundary = now
            self._tick(False)
        finally:
            self._lock.release()

    def start(self, interval: float | None = None) -> None:
        """Tune every ``interval`` seconds (default: the tuner's) in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        every = self.interval if interval is None else interval
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True,
                                        name="rag-cache-tuner")
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.apply_tuning()
            except Exception:  # keep tuning; the cache must not notice
                _log.exception("rag-cache tuner: a tuning pass failed")

    def stop(self) -> None:
        """Stop the background thread (waits for a pass in progress)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop, stop listening, close the history (settings stay as they are)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.signals.detach()
        self.store.close()
        if self._own_analytics:
            self.analytics.close(capture=False)

    def __enter__(self) -> CacheTuner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
