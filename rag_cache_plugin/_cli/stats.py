"""``rag-cache stats``: numbers from the analytics store (or live, from Redis)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | None) -> float | None:
    """"90", "30m", "6h", "7d" -> the epoch time that long ago (None: everything)."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 6h, 7d)")
    return time.time() - float(m.group(1)) * _UNITS[m.group(2) or "s"]


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", type=Path, default=None,
                        help="analytics store (default: $RAG_CACHE_ANALYTICS_PATH, else "
                             "<L2 file>.analytics.db from $RAG_CACHE_SQLITE_PATH)")
    parser.add_argument("--since", default=None, metavar="DURATION",
                        help="only the last DURATION (e.g. 30m, 6h, 7d); default: all kept")


def open_store(args: argparse.Namespace) -> Any:
    from ..analytics import SnapshotStore, default_store_path

    path = args.path or default_store_path()
    if path is None:
        raise SystemExit("rag-cache: no analytics store; pass --path or set "
                         "RAG_CACHE_ANALYTICS_PATH")
    if not Path(path).exists():
        raise SystemExit(f"rag-cache: {path}: no such analytics store")
    return SnapshotStore(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--redis", metavar="URL", default=None,
                        help="read the live counters every process publishes to this Redis "
                             "instead of the store")
    parser.add_argument("--prefix", default="ragc", help="key prefix of the cache in Redis")


def _gather(args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]]]:
    from ..analytics import MetricSnapshot, read_fleet

    if args.redis:
        import redis

        client: Any = redis.Redis.from_url(args.redis)
        try:
            if client.info("cluster").get("cluster_enabled"):
                client.close()
                client = redis.cluster.RedisCluster.from_url(args.redis)
            return MetricSnapshot.merge(read_fleet(client, args.prefix)), []
        finally:
            client.close()
    store = open_store(args)
    try:
        since = parse_since(args.since)
        return MetricSnapshot.merge(store.snapshots(since)), store.alerts(since)
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    import json

    from ..analytics import health_score, recommend

    snap, alerts = _gather(args)
    health, recs = health_score(snap), recommend(snap)
    if args.json:
        out = snap.summary()
        out.update(health=health.to_dict(), recommendations=[r.to_dict() for r in recs],
                   alerts=alerts)
        json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
        print()
        return 0
    _print_tables(snap, health, recs, alerts)
    return 0


def _print_tables(snap: Any, health: Any, recs: list[Any], alerts: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any, kind: str = "") -> str:
        if v is None:
            return "-"
        return {"%": f"{100 * v:.1f}%", "ms": f"{1000 * v:.3f} ms", "$": f"${v:,.4f}"}.get(
            kind, f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3f}")

    m = snap.metrics()
    console = Console()
    overview = Table(title=f"rag-cache: {snap.processes} process(es), {snap.interval:,.0f} s",
                     show_header=False)
    for label, value in (
            ("health", f"{health.score:.0f}/100 ({health.status})"),
            ("lookups", fmt(snap.lookups)), ("hit rate", fmt(m["hit_rate"], "%")),
            ("exact / semantic", f"{fmt(m['exact_hit_rate'], '%')} / "
                                 f"{fmt(m['semantic_hit_rate'], '%')}"),
            ("throughput", f"{fmt(m['throughput'])} lookups/s"),
            ("tokens saved", fmt(snap.tokens_saved)), ("cost saved", fmt(snap.cost_saved, "$")),
            ("latency saved", f"{snap.latency_saved:,.1f} s"),
            ("model p50 / p95", f"{fmt(m['model_p50'], 'ms')} / {fmt(m['model_p95'], 'ms')}"),
            ("false-hit reports", fmt(snap.false_hit_reports)),
            ("L1 memory", f"{fmt(m['l1_bytes'])} B ({fmt(m['l1_memory_ratio'], '%')})"),
            ("L2 size", f"{fmt(m['l2_bytes'])} B, {fmt(m['l2_entries'])} entries")):
        overview.add_row(label, value)
    console.print(overview)
    tiers = Table(title="per tier")
    for col in ("tier", "hit rate", "p50", "p95", "p99", "errors", "evictions", "expired"):
        tiers.add_column(col)
    for t in ("l1", "l2", "l3"):
        tiers.add_row(t, fmt(m[f"{t}_hit_rate"], "%"), fmt(m[f"{t}_p50"], "ms"),
                      fmt(m[f"{t}_p95"], "ms"), fmt(m[f"{t}_p99"], "ms"),
                      fmt(m[f"{t}_error_rate"], "%"), fmt(m[f"{t}_evictions"]),
                      fmt(m[f"{t}_expirations"]))
    console.print(tiers)
    if recs:
        table = Table(title="recommendations")
        for col in ("priority", "action", "why"):
            table.add_column(col)
        for r in recs:
            why = r.reason + ("\n" + "; ".join(r.questions[:5]) if r.questions else "")
            table.add_row(r.priority, r.action, why)
        console.print(table)
    if alerts:
        table = Table(title="alerts (latest 20)")
        for col in ("time", "rule", "severity", "state", "value"):
            table.add_column(col)
        for a in alerts[-20:]:
            table.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["ts"])), a["rule"],
                          a["severity"], a["state"], fmt(a["value"]))
        console.print(table)
