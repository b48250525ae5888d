"""Exports of ``CacheAnalytics``: Prometheus and the HTML report (imported lazily)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .alerts import AlertManager
    from .health import HealthScore
    from .metrics import MetricSnapshot
    from .store import SnapshotStore

__all__ = ["Exports"]


class Exports:
    alerts: AlertManager
    store: SnapshotStore | None

    # Implemented by the engine (which inherits this class).
    def totals(self) -> MetricSnapshot:
        raise NotImplementedError

    def calculate_health_score(self, snapshot: MetricSnapshot | None = None) -> HealthScore:
        raise NotImplementedError

    def capture_snapshot(self) -> MetricSnapshot:
        raise NotImplementedError

    def get_metrics_history(self, since: float | None = None, *,
                            all_processes: bool = True) -> list[MetricSnapshot]:
        raise NotImplementedError

    def prometheus_collector(self) -> Any:
        """A collector to register with any ``prometheus_client`` registry."""
        from .prometheus import AnalyticsCollector

        def extra() -> dict[str, Any]:
            counts = {"critical": 0, "warning": 0, "info": 0}
            for a in self.alerts.active():
                counts[a.severity.value] += 1
            return {"health": self.calculate_health_score().score, "alerts": counts}
        return AnalyticsCollector(self.totals, extra)

    def serve_prometheus(self, port: int = 0, addr: str = "127.0.0.1") -> tuple[Any, int]:
        """Serve ``/metrics`` from a registry of its own; returns (server, port).
        ``server.shutdown()`` stops it."""
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.prometheus_collector())
        server, _thread = start_http_server(port, addr=addr, registry=registry)
        return server, int(server.server_address[1])

    def write_report(self, path: str | os.PathLike[str], *, since: float | None = None,
                     title: str = "rag-cache report") -> Path:
        """Capture a snapshot and write the HTML dashboard of the stored history
        (every process of the host).  Needs the ``report`` extra (matplotlib)."""
        from .report import write_report

        self.capture_snapshot()
        alerts = self.store.alerts(since) if self.store is not None else []
        return write_report(path, self.get_metrics_history(since), alerts, title=title)
