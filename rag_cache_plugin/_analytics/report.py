"""The self-contained HTML dashboard: charts embedded as base64 PNG, styles inline,
no scripts and no external resources, so the file opens from disk anywhere."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import charts
from .health import health_score, recommend
from .metrics import MetricSnapshot

__all__ = ["bin_snapshots", "render_report", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{margin-bottom:0}.sub{color:#666}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:1.5em 0}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:1.5em}
table{border-collapse:collapse;margin:1em 0;width:100%}
td,th{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;font-size:.92em}
img{max-width:100%;display:block;margin:1em 0}
.critical{color:#c0392b}.warning{color:#e67e22}.info{color:#2980b9}
"""


def bin_snapshots(snaps: Sequence[MetricSnapshot], bins: int = 120) -> list[MetricSnapshot]:
    """Merge snapshots (of every process) into at most ``bins`` time bins."""
    if not snaps:
        return []
    start = min(s.ts for s in snaps)
    end = max(s.ts for s in snaps)
    width = max((end - start) / bins, min(s.interval for s in snaps), 1e-6)
    groups: dict[int, list[MetricSnapshot]] = {}
    for s in snaps:
        groups.setdefault(int((s.ts - start) // width), []).append(s)
    return [MetricSnapshot.merge(groups[k]) for k in sorted(groups)]


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "-"
    if kind == "%":
        return f"{100 * v:.1f}%"
    if kind == "ms":
        return f"{1e6 * v:.1f} µs" if v < 1e-3 else f"{1000 * v:.2f} ms"
    if kind == "$":
        return f"${v:,.4f}"
    return f"{v:,.0f}" if isinstance(v, int | float) and float(v).is_integer() else f"{v:,.3f}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def render_report(snaps: Sequence[MetricSnapshot], alerts: Sequence[dict[str, Any]], *,
                  title: str = "rag-cache report") -> str:
    total = MetricSnapshot.merge(snaps)
    m = total.metrics()
    health = health_score(total)
    bins = bin_snapshots(snaps)
    start = min((s.ts - s.interval for s in snaps), default=time.time())
    end = max((s.ts for s in snaps), default=start)
    cards = [("Health", f"{health.score:.0f}/100 ({health.status})"),
             ("Lookups", _fmt(total.lookups)), ("Hit rate", _fmt(m["hit_rate"], "%")),
             ("Cost saved", _fmt(total.cost_saved, "$")),
             ("Tokens saved", _fmt(total.tokens_saved)),
             ("Latency saved", f"{total.latency_saved:,.1f} s"),
             ("Lookup p95", _fmt(m["lookup_p95"], "ms")),
             ("Model p95", _fmt(m["model_p95"], "ms"))]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=sub>{_when(start)} to {_when(end)} · {total.processes} process(es) · "
        f"{len(snaps)} snapshots · generated {_when(time.time())}</p>",
        "<div class=cards>" + "".join(
            f"<div class=card>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in cards)
        + "</div>",
    ]
    for name, png in (("Hit rate over time", charts.hit_rate_chart(bins)),
                      ("Latency over time", charts.latency_chart(bins)),
                      ("Savings over time", charts.savings_chart(bins)),
                      ("Alerts over time", charts.alerts_chart(alerts, start, end))):
        parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{png}">')
    parts.append("<h2>Per tier</h2>" + _table(
        ["tier", "hit rate", "exact hits", "semantic hits", "p50", "p95", "p99", "errors",
         "evictions", "expirations"],
        [[t.upper(), _fmt(total.hit_rate(t), "%"), total.hits(t, "exact"),
          total.hits(t, "semantic"), _fmt(m[f"{t}_p50"], "ms"), _fmt(m[f"{t}_p95"], "ms"),
          _fmt(m[f"{t}_p99"], "ms"), _fmt(m[f"{t}_error_rate"], "%"),
          _fmt(m[f"{t}_evictions"]), _fmt(m[f"{t}_expirations"])] for t in ("l1", "l2", "l3")]))
    parts.append("<h2>Health</h2>" + _table(
        ["factor", "points lost", "of", "why"],
        [[f.name, f"{f.lost:.1f}", f"{f.weight:.0f}", f.detail] for f in health.breakdown]))
    recs = recommend(total)
    parts.append("<h2>Recommendations</h2>" + (_table(
        ["priority", "action", "why", "questions"],
        [[r.priority, r.action, r.reason, "; ".join(r.questions)] for r in recs])
        if recs else "<p>Nothing to change.</p>"))
    parts.append("<h2>Alerts</h2>" + (_table(
        ["time", "rule", "severity", "state", "value", "message"],
        [[_when(a["ts"]), a["rule"], a["severity"], a["state"], _fmt(a["value"]), a["message"]]
         for a in alerts[-200:]]) if alerts else "<p>No alerts.</p>"))
    if total.top_missed:
        parts.append("<h2>Most missed questions</h2>" + _table(
            ["question", "misses"], [[q[:200], n] for q, n in total.top_missed[:20]]))
    procs = sorted({(s.proc, s.host, s.pid) for s in snaps})
    parts.append("<h2>Processes</h2>" + _table(["process", "host", "pid"], procs))
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            "<link rel=icon href='data:,'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>")


def write_report(path: str | os.PathLike[str], snaps: Sequence[MetricSnapshot],
                 alerts: Sequence[dict[str, Any]], *, title: str = "rag-cache report") -> Path:
    out = Path(path)
    text = render_report(snaps, alerts, title=title)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)  # a browser never sees a half-written file
    return out
