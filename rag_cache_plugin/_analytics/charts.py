"""Charts for the HTML report, drawn with matplotlib's object API on an Agg canvas
(no pyplot: the application's own backend and global state stay untouched)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .metrics import MetricSnapshot

__all__ = ["alerts_chart", "hit_rate_chart", "latency_chart", "savings_chart"]

_COLORS = {"critical": "#c0392b", "warning": "#e67e22", "info": "#2980b9"}


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _times(bins: Sequence[MetricSnapshot]) -> list[datetime]:
    return [datetime.fromtimestamp(b.ts, UTC) for b in bins]


def _span(bins: Sequence[MetricSnapshot]) -> tuple[float, float] | None:
    return (bins[0].ts, bins[-1].ts) if bins else None


def _finish(fig: Any, ax: Any, title: str, empty: bool,
            span: tuple[float, float] | None = None) -> str:
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(True, alpha=0.3)
    if span is not None:  # explicit limits: one point must not autoscale to decades
        width = span[1] - span[0]
        pad = width * 0.03 if width > 0 else 30.0
        ax.set_xlim(datetime.fromtimestamp(span[0] - pad, UTC),
                    datetime.fromtimestamp(span[1] + pad, UTC))
    if empty:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    else:
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(
            mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        handles, _labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def hit_rate_chart(bins: Sequence[MetricSnapshot]) -> str:
    fig, ax = _figure()
    t = _times(bins)
    for label, tier, kind in (("overall", None, None), ("L1", "l1", None), ("L2", "l2", None),
                              ("L3", "l3", None), ("semantic", None, "semantic")):
        ys = [b.hit_rate(tier, kind) for b in bins]
        if any(y for y in ys):
            ax.plot(t, [float("nan") if y is None else 100 * y for y in ys], marker=".",
                    label=label, linewidth=2 if label == "overall" else 1)
    ax.set_ylabel("% of lookups")
    ax.set_ylim(0, 100)
    return _finish(fig, ax, "Hit rate", not bins, _span(bins))


def latency_chart(bins: Sequence[MetricSnapshot]) -> str:
    fig, ax = _figure()
    t = _times(bins)
    drawn = False
    for q in (50, 95, 99):
        ys = [b.latency().percentile(q) for b in bins]
        if any(ys):
            drawn = True
            ax.plot(t, [float("nan") if y is None else y * 1000 for y in ys], marker=".",
                    label=f"lookup p{q}")
    ys = [b.percentile("model", 95) for b in bins]
    if any(ys):
        drawn = True
        ax.plot(t, [float("nan") if y is None else y * 1000 for y in ys], marker=".",
                linestyle="--", label="model call p95")
    if drawn:
        ax.set_yscale("log")
    ax.set_ylabel("milliseconds")
    return _finish(fig, ax, "Latency", not bins, _span(bins))


def savings_chart(bins: Sequence[MetricSnapshot]) -> str:
    fig, ax = _figure()
    t = _times(bins)
    cost, tokens, total_c, total_t = [], [], 0.0, 0
    for b in bins:
        total_c += b.cost_saved
        total_t += b.tokens_saved
        cost.append(total_c)
        tokens.append(total_t)
    ax.plot(t, cost, color="#27ae60", marker=".", label="cost saved (USD)")
    ax.set_ylabel("US dollars")
    if bins:
        ax2 = ax.twinx()
        ax2.plot(t, tokens, color="#8e44ad", linestyle="--", label="tokens saved")
        ax2.set_ylabel("tokens")
        ax2.legend(fontsize=8, loc="lower right")
    return _finish(fig, ax, "Savings (cumulative)", not bins, _span(bins))


def alerts_chart(alerts: Sequence[dict[str, Any]], start: float, end: float) -> str:
    fig, ax = _figure()
    rules = sorted({a["rule"] for a in alerts})
    for i, rule in enumerate(rules):
        opened: dict[str, Any] | None = None
        for a in (a for a in alerts if a["rule"] == rule):
            color = _COLORS.get(a["severity"], "#7f8c8d")
            if a["state"] == "fired":
                opened = a
                ax.plot([datetime.fromtimestamp(a["ts"], UTC)], [i], "v", color=color)
            elif opened is not None:
                ax.plot([datetime.fromtimestamp(opened["ts"], UTC),
                         datetime.fromtimestamp(a["ts"], UTC)], [i, i], color=color, linewidth=6,
                        solid_capstyle="butt")
                opened = None
        if opened is not None:  # still firing at the end of the report
            ax.plot([datetime.fromtimestamp(opened["ts"], UTC), datetime.fromtimestamp(end, UTC)],
                    [i, i], color=_COLORS.get(opened["severity"], "#7f8c8d"), linewidth=6)
    ax.set_yticks(range(len(rules)), rules, fontsize=8)
    ax.set_ylim(-1, max(len(rules), 1))
    if not rules:
        ax.text(0.5, 0.5, "no alerts", ha="center", va="center", transform=ax.transAxes)
    return _finish(fig, ax, "Alerts (bars: firing)", False, (start, end))
