"""Moves what the recorder gathered into the SQLite log (and the shared Redis log):
every ``interval`` seconds from a daemon thread, and whenever the warmer needs a
current view."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .log import QueryLog
from .recorder import Recorder
from .shared import SharedLog

__all__ = ["LogWriter"]

_log = logging.getLogger("rag_cache_plugin.warming")
_PRUNE_EVERY = 300.0  # seconds between size checks of the log


class LogWriter:
    def __init__(self, recorder: Recorder, log: QueryLog, shared: SharedLog | None, *,
                 half_life: float, max_rows: int, clock: Callable[[], float],
                 interval: float | None) -> None:
        self.recorder, self.log, self.shared = recorder, log, shared
        self.half_life = half_life
        self.max_rows = max_rows
        self.clock = clock
        self.interval = interval
        self._lock = threading.Lock()
        self._next_prune = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sync_warmed()

    def start(self) -> None:
        if self.interval and (self._thread is None or not self._thread.is_alive()):
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rag-cache-warming-log",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def _run(self) -> None:
        assert self.interval
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # keep logging; the cache must not notice
                _log.exception("rag-cache warming: flushing the query log failed")

    def flush(self) -> None:
        with self._lock:
            deltas, hits, replaced, expired, cleared = self.recorder.take()
            self.log.merge(deltas, self.half_life)
            if self.shared is not None:
                self.shared.merge(deltas)
            self.log.mark_uncached(expired, cleared)
            if replaced:
                self.log.deactivate(replaced)
            self.log.add_hits(hits)
            self._sync_warmed()
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + _PRUNE_EVERY
                self.log.prune(self.max_rows, self.clock(), self.half_life)

    def warmed(self, rows: list[tuple[str, str, str, float, float, float]], after: int) -> None:
        """Record entries a run wrote (see ``QueryLog.mark_warmed``) and count hits on
        them from event ``after`` on; under the flush lock, so a concurrent flush
        cannot drop them as unknown."""
        with self._lock:
            self.log.mark_warmed(rows)
            self.recorder.track({r[0]: r[3] for r in rows}, after=after)

    def _sync_warmed(self) -> None:
        """Follow the entries every process on the host warmed (hits on them count
        here too) and drop the ones a user's answer replaced."""
        active = self.log.warmed_active()
        fresh = {k: at for k, at in active.items() if k not in self.recorder.warmed}
        if fresh:
            self.recorder.track(fresh)
        self.recorder.forget_warmed(active)
