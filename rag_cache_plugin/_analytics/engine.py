"""``CacheAnalytics``: the engine tying recorder, snapshots, store, alerts, health,
Redis publishing and exports together."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from .._events import EventBus
from .alerts import AlertEvent, AlertManager, AlertRule
from .costs import EntryCost
from .exports import Exports
from .health import HealthScore, Recommendation, health_score, recommend
from .metrics import MetricSnapshot
from .prices import PriceLike, PriceTable
from .recorder import Recorder
from .store import SnapshotStore, default_store_path
from .totals import Totals, gauges_of, read_totals

__all__ = ["CacheAnalytics"]

_log = logging.getLogger("rag_cache_plugin.analytics")
_LIVE: weakref.WeakSet[CacheAnalytics] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # the last window is written even if nobody calls close()
    for engine in list(_LIVE):
        engine.close()


class CacheAnalytics(Exports):
    """Metrics, alerts, health and savings of one ``RagCache`` (or of any bus the
    framework handlers emit on).  Recording is a listener on ``bus``; everything
    else runs in a background thread every ``interval`` seconds or on demand.

    ``price_table``: model -> (input, output) US dollars per million tokens (default
    ``DEFAULT_PRICES``).  ``store_path``: the SQLite snapshot store; "auto" puts it
    beside the L2 file (``<name>.analytics.db``), None keeps history in memory only.
    ``retention``: seconds of history kept.  ``redis_publish``: publish this
    process's counters to the cache's Redis (default: when it has one).
    ``alert_rules`` (default ``DEFAULT_RULES``) and ``alert_hooks``: see
    ``AlertManager``.  ``health_window``: seconds the default health score looks back.
    ``association_window``: seconds within which a model call and the store of its
    answer are paired.  ``autostart=False``: no thread; call ``capture_snapshot()``.
    """

    def __init__(
        self,
        cache: Any = None,
        *,
        bus: EventBus | None = None,
        interval: float = 60.0,
        price_table: PriceTable | Mapping[str, PriceLike] | None = None,
        store_path: str | os.PathLike[str] | Literal["auto"] | None = "auto",
        retention: float = 7 * 86400.0,
        redis_publish: bool | None = None,
        alert_rules: Iterable[AlertRule | Mapping[str, Any]] | None = None,
        alert_hooks: Iterable[Callable[[AlertEvent], None]] = (),
        health_window: float = 900.0,
        association_window: float = 60.0,
        history_size: int = 1440,
        autostart: bool = True,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        l3 = getattr(cache, "l3", None)
        if redis_publish and l3 is None:
            raise ValueError("redis_publish needs a cache with an L3 (Redis) tier")
        if cache is None and bus is None:
            bus = EventBus()
        self.cache = cache
        self.bus: EventBus = bus if bus is not None else cache.bus
        self.interval = interval
        self.health_window = health_window
        self.prices = price_table if isinstance(price_table, PriceTable) else PriceTable(
            price_table)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.proc = f"{self.host}-{self.pid}-{uuid.uuid4().hex[:6]}"
        if store_path == "auto":
            sqlite_path = getattr(getattr(cache, "config", None), "sqlite_path", None)
            store_path = default_store_path(sqlite_path)
        self.store = SnapshotStore(store_path, retention=retention) if store_path else None
        self.recorder = Recorder(self.prices, association_window=association_window)
        self.costs = self.recorder.book
        if self.store is not None:  # savings of entries computed before a restart
            for key, cost in self.store.recent_costs(50_000).items():
                self.costs.remember(key, "", cost, persist=False)
        self.alerts = AlertManager(hooks=list(alert_hooks))
        if alert_rules is not None:
            self.alerts.set_rules(alert_rules)
        self._redis = l3 if redis_publish or redis_publish is None else None
        self.publish_errors = 0
        self.history: deque[MetricSnapshot] = deque(maxlen=history_size)
        self.started = time.time()
        self._last = Totals()
        self._last_ts = self.started
        self._capture_lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        detach = self.bus.attach_hit_log(self.recorder.hits)
        # Another engine holds the bus's hit log: take hits as events instead.
        types = self.recorder.event_types if detach is not None else None
        off_events = self.bus.subscribe(self.recorder.listener, types)

        def unsubscribe() -> None:
            off_events()
            if detach is not None:
                detach()

        self._unsubscribe = unsubscribe
        _LIVE.add(self)
        if autostart:
            self.start()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (captures every ``interval`` seconds)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rag-cache-analytics",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def close(self, *, capture: bool = True) -> None:
        """Stop, write a last snapshot (unless ``capture=False``) and let go of the bus."""
        if self._closed:
            return
        self.stop()
        if capture:
            try:
                self.capture_snapshot()
            except Exception:
                _log.exception("rag-cache analytics: final snapshot failed")
        self._closed = True
        self._unsubscribe()
        if self.store is not None:
            self.store.close()
        _LIVE.discard(self)

    def __enter__(self) -> CacheAnalytics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
    def _run(self) -> None:
        tick = min(1.0, self.interval)
        due = time.monotonic() + self.interval
        while not self._stop.wait(tick):
            try:
                if time.monotonic() >= due:
                    due += self.interval
                    self.capture_snapshot()
                else:
                    self._housekeeping()
            except Exception:  # keep capturing; the cache must not notice
                _log.exception("rag-cache analytics: background capture failed")

    def _housekeeping(self) -> None:
        """Off the hot path: fold finished threads, price the hits, persist costs."""
        with self._capture_lock:
            saved = self.costs.price(self.recorder.drain(), self._stored_costs)
            base = self.recorder.base.c
            for k, v in saved.items():
                base[k] += v
            writes = self.costs.take_writes()
            if self.store is not None and writes:
                try:
                    self.store.write_costs(writes)
                except Exception:
                    _log.exception("rag-cache analytics: writing entry costs failed")

    def _stored_costs(self, keys: Iterable[str]) -> dict[str, EntryCost]:
        if self.store is None:
            return {}
        try:
            return self.store.costs(keys)
        except Exception:  # unknown for now; asked again next interval
            _log.exception("rag-cache analytics: reading entry costs failed")
            return {}

    # -- snapshots ------------------------------------------------------------------------

    def _snapshot(self, t: Totals, ts: float, interval: float) -> MetricSnapshot:
        return MetricSnapshot(ts=ts, interval=interval, proc=self.proc, host=self.host,
                              pid=self.pid, counters=t.counters, histograms=t.histograms,
                              gauges=gauges_of(self.cache),
                              top_missed=sorted(t.missed.items(),
                                                key=lambda kv: (-kv[1], kv[0]))[:50],
                              last_errors=t.errors)

    def totals(self) -> MetricSnapshot:
        """Everything since this engine started (what Prometheus and Redis see)."""
        with self._capture_lock:
            self._housekeeping()
            t = read_totals(self.recorder)
        now = time.time()
        return self._snapshot(t, now, now - self.started)

    def capture_snapshot(self) -> MetricSnapshot:
        """Close the current window: its snapshot is stored, published, checked
        against the alert rules and returned."""
        with self._capture_lock:
            self._housekeeping()
            now = time.time()
            current = read_totals(self.recorder)
            window = current.minus(self._last)
            snap = self._snapshot(window, now, max(now - self._last_ts, 1e-9))
            self._last, self._last_ts = current, now
            self.history.append(snap)
            events = self.alerts.evaluate(snap.metrics(), now)
            if self.store is not None:
                try:  # a full disk or a long lock must not lose the alerts or the window
                    self.store.write_snapshot(snap)
                    for ev in events:
                        self.store.write_alert(ev.ts, self.proc, ev.rule, ev.severity.value,
                                               ev.state, ev.value, ev.message)
                except Exception:
                    _log.exception("rag-cache analytics: writing the snapshot failed")
            self._publish(current, now)
            self.costs.forget_unknown()  # ask the store again next interval
            return snap

    def _publish(self, current: Totals, now: float) -> None:
        from .fleet import publish_if_up

        if self._redis is not None and not publish_if_up(
                self._redis, self.cache.breakers.get("l3"),
                self._snapshot(current, now, now - self.started), max(3 * self.interval, 30.0)):
            self.publish_errors += 1

    def recent(self, seconds: float | None = None) -> MetricSnapshot:
        """This process's last ``seconds`` (default ``health_window``), the open
        window included, merged into one snapshot."""
        horizon = time.time() - (self.health_window if seconds is None else seconds)
        with self._capture_lock:
            self._housekeeping()
            now = time.time()
            live = self._snapshot(read_totals(self.recorder).minus(self._last), now,
                                  max(now - self._last_ts, 1e-9))
            snaps = [s for s in self.history if s.ts >= horizon]
        return MetricSnapshot.merge([*snaps, live])

    def get_metrics_history(self, since: float | None = None, *,
                            all_processes: bool = True) -> list[MetricSnapshot]:
        """Stored snapshots (surviving restarts; every process on the host unless
        ``all_processes=False``), else this process's in-memory ones."""
        if self.store is None:
            return [s for s in self.history if since is None or s.ts >= since]
        return self.store.snapshots(since, proc=None if all_processes else self.proc)

    def aggregate(self, since: float | None = None) -> MetricSnapshot:
        """Every process's stored snapshots since ``since``, merged."""
        return MetricSnapshot.merge(self.get_metrics_history(since))

    def fleet_snapshot(self) -> MetricSnapshot:
        """Cumulative totals of every live process on every host (through Redis)."""
        if self._redis is None:
            raise RuntimeError("fleet_snapshot needs redis_publish")
        from .fleet import read_fleet

        return MetricSnapshot.merge(read_fleet(self._redis.client, self._redis.config.prefix))

    # -- health, recommendations, alerts ------------------------------------------------------

    def calculate_health_score(self, snapshot: MetricSnapshot | None = None) -> HealthScore:
        """0-100 with the breakdown of what cost points (default: ``recent()``)."""
        return health_score(snapshot if snapshot is not None else self.recent())

    def get_recommendations(self, snapshot: MetricSnapshot | None = None) -> list[Recommendation]:
        return recommend(snapshot if snapshot is not None else self.recent())

    def get_active_alerts(self) -> list[AlertEvent]:
        return self.alerts.active()

    def add_alert_hook(self, hook: Callable[[AlertEvent], None]) -> None:
        """``hook(AlertEvent)`` runs when an alert fires or clears."""
        self.alerts.add_hook(hook)

    def set_alert_rules(self, rules: Iterable[AlertRule | Mapping[str, Any]]) -> None:
        self.alerts.set_rules(rules)

    def get_top_missed_questions(self, n: int = 10) -> list[tuple[str, int]]:
        return self.recent().top_missed[:n]

    def record_cost(self, key: str, *, model: str, input_tokens: int, output_tokens: int,
                    latency: float = 0.0, namespace: str = "") -> None:
        """Say what computing entry ``key`` cost (when no handler reports the call)."""
        self.costs.remember(key, namespace,
                            self.costs.entry_cost(model, input_tokens, output_tokens, latency))
