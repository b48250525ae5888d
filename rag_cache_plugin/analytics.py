"""Cache analytics: hit rates, latency percentiles, savings, alerts, health score,
recommendations, history, Prometheus and an HTML dashboard.

    from rag_cache_plugin.analytics import CacheAnalytics
    analytics = CacheAnalytics(cache, interval=60, price_table={"my-model": (1.0, 2.0)})
    analytics.capture_snapshot().hit_rate()
    analytics.calculate_health_score().score
"""

from ._analytics.alerts import DEFAULT_RULES, AlertEvent, AlertManager, AlertRule, Severity
from ._analytics.costs import EntryCost
from ._analytics.engine import CacheAnalytics
from ._analytics.fleet import read_fleet
from ._analytics.health import HealthFactor, HealthScore, Recommendation, health_score, recommend
from ._analytics.histogram import PRECISION, LogHistogram
from ._analytics.metrics import METRIC_NAMES, MetricSnapshot
from ._analytics.prices import DEFAULT_PRICES, PRICES_AS_OF, ModelPrice, PriceTable
from ._analytics.store import SnapshotStore, default_store_path

__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_RULES",
    "METRIC_NAMES",
    "PRECISION",
    "PRICES_AS_OF",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "CacheAnalytics",
    "EntryCost",
    "HealthFactor",
    "HealthScore",
    "LogHistogram",
    "MetricSnapshot",
    "ModelPrice",
    "PriceTable",
    "Recommendation",
    "Severity",
    "SnapshotStore",
    "default_store_path",
    "health_score",
    "read_fleet",
    "recommend",
]
