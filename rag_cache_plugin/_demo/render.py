"""The demo's summary on screen (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from .run import DemoRun

__all__ = ["render"]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{1000 * v:.0f} µs" if v < 1 else f"{v:,.1f} ms"


def _of(n: int, total: int) -> str:
    return f"{n}/{total}" + (f" ({100 * n / total:.0f}%)" if total else "")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rsplit(" ", 1)[0] + " …"


def _kv(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left", min_width=60)
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    return t


def _header(run: DemoRun, s: dict[str, Any]) -> Panel:
    o = run.options
    lat = s["simulated_latency_ms"]
    tiers = f"L1 memory ({o.l1_max_entries} entries) + L2 SQLite"
    if s["redis"]:
        r = s["redis"]
        tiers += f" + L3 Redis ({r['label'] or r['mode']}, {r['nodes']} nodes, {r['status']})"
    return Panel(Group(
        f"{s['questions']} questions to Brightwell Home's support assistant "
        "(LlamaIndex retrieval + LangChain chat chain)",
        f"cache: {tiers}; semantic matching with all-MiniLM-L6-v2 ({o.semantic_setting})",
        f"model: local simulation, {lat['base']:.0f} ms + {lat['per_output_token']:.2f} ms per "
        f"output token ({o.latency_scale:g} x a hosted model's 500 ms + 15 ms/token), "
        "priced at $2.50 / $10.00 per million input / output tokens",
    ), title="rag-cache demo", title_align="left")


def _answers(s: dict[str, Any]) -> Table:
    a, r, g = s["answers"], s["retrievals"], s["ground_truth"]
    bad = [k for k, v in s["checks"].items() if not v]
    ok = "[green]yes[/]" if not bad else "[red]NO: " + ", ".join(bad) + "[/]"
    return _kv("Answers", [
        ("answered from the cache", _of(a["from_cache"], a["asked"])),
        ("answered by the model", str(a["model_calls"])),
        ("retrievals from the cache", _of(r["from_cache"], r["asked"])),
        ("repeats answered from the cache", _of(g["repeats"]["hit"], g["repeats"]["total"])),
        ("paraphrases answered from the cache",
         _of(g["paraphrases"]["hit"], g["paraphrases"]["total"])),
        ("look-alikes correctly missed",
         f"{g['lookalikes']['missed']}/{g['lookalikes']['total']}"),
        ("false hits", ("[green]0[/]" if not g["false_hits"] else
                        f"[red]{g['false_hits']}[/]: " + "; ".join(g["false_hit_questions"]))),
        ("answers, marks and tokens agree with analytics", ok),
    ])


def _tiers(s: dict[str, Any]) -> Table:
    lk, lat = s["lookups"], s["latency_ms"]
    t = Table(title=f"Answer-cache lookups: {lk['total']}, "
                    f"hit rate {_pct(lk['hit_rate'])}", title_justify="left", min_width=60)
    for col in ("tier", "hits", "exact", "semantic", "share of lookups", "p50", "p95"):
        t.add_column(col, justify="left" if col == "tier" else "right")
    for name, tier in lk["tiers"].items():
        p = lat[name]
        t.add_row(name.upper(), str(tier["hits"]), str(tier["exact"]), str(tier["semantic"]),
                  _pct(tier["rate"]), _ms(p["p50"]), _ms(p["p95"]))
    t.add_row("semantic hits", "", "", "", _pct(lk["semantic_rate"]),
              _ms(lat["semantic"]["p50"]), _ms(lat["semantic"]["p95"]))
    t.add_row("misses", str(lk["misses"]), "", "", _pct(1 - (lk["hit_rate"] or 0)),
              _ms(lat["miss"]["p50"]), _ms(lat["miss"]["p95"]))
    t.add_row("model call", "", "", "", "", _ms(lat["model"]["p50"]), _ms(lat["model"]["p95"]))
    return t


def _savings(s: dict[str, Any]) -> Table:
    v = s["savings"]
    return _kv("Saved by the cache", [
        ("tokens", f"{v['tokens']:,} ({v['input_tokens']:,} in, {v['output_tokens']:,} out)"),
        ("cost", f"${v['cost_usd']:.4f} (spent ${v['cost_spent_usd'] or 0:.4f} on "
                 f"{v['tokens_spent']:,} tokens)"),
        ("model time", f"{v['model_seconds']:.1f} s"),
    ])


def _lookalikes(run: DemoRun) -> Table:
    from .questions import BY_ID

    t = Table(title="Look-alikes (their twin was already cached)", title_justify="left")
    for col in ("asked", "looks like", "answered by", "answer"):
        t.add_column(col, overflow="fold")
    for o in run.outcomes:
        if o.ask.lookalike:
            twin = BY_ID[BY_ID[o.ask.family].twin or ""].question
            by = "[green]model (miss)[/]" if o.cache is None else "[red]cache: FALSE HIT[/]"
            t.add_row(o.ask.question, twin, by, _clip(o.answer, 80))
    return t


def _health(s: dict[str, Any]) -> Table:
    h = s["health"]
    colour = {"healthy": "green", "degraded": "yellow"}.get(h["status"], "red")
    rows = [("score", f"[{colour}]{h['score']:.0f}/100 ({h['status']})[/]")]
    rows += [(f"- {f['name']}", f"-{f['lost']:.1f}: {f['detail']}")
             for f in h["breakdown"] if f["lost"] > 0]
    rows.append(("alerts", ", ".join(
        f"{a['rule']} ({a['severity']}) {a['state']}" for a in s["alerts"]) or "none fired"))
    rows.append(("alerts active at the end", ", ".join(s["active_alerts"]) or "none"))
    return _kv("Health (whole run)", rows)


def _recommendations(s: dict[str, Any]) -> Table:
    t = Table(title="Recommendations (whole run)", title_justify="left")
    for col in ("priority", "action", "why"):
        t.add_column(col, overflow="fold")
    for r in s["recommendations"]:
        t.add_row(r["priority"], r["action"], r["reason"])
    if not s["recommendations"]:
        t.add_row("-", "none", "")
    return t


def _change(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        return ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in new.items() if old.get(k) != v)
    return f"{old} -> {new}"


def _engines(s: dict[str, Any]) -> Table:
    rows: list[tuple[str, str]] = []
    w = s["warming"]
    for run in w["runs"]:
        what = (f"{run['warmed']} answers warmed in {run['seconds']:.1f} s "
                f"(${run['cost_usd']:.4f}, {run['tokens']:,} tokens)")
        if run["source"] == "faq":
            rows.append(("warming: FAQ", f"before the first user, {what}"))
        else:
            rows.append(("warming: next deploy",
                         f"cache emptied; from the query log ({run['patterns']} question "
                         f"families), {what}: " + "; ".join(run["questions"][:4])
                         + (" ..." if len(run["questions"]) > 4 else "")))
    roi = "" if w["roi"] is None else f" (return so far {w['roi']:.1f}x)"
    rows.append(("warming: return", f"{w['hits']} hits on warmed answers saved "
                                     f"${w['saved_usd']:.4f}; warming cost "
                                     f"${w['cost_usd']:.4f} in all{roi}"))
    t = s["tuning"]
    rows.append(("tuner", f"strategy {t['strategy']}, {t['windows']} windows judged at "
                          "chain boundaries"))
    for d in t["decisions"]:
        what = d["reason"] if d["kind"] in ("keep", "rollback") else (
            f"{d['action']}: {_change(d['old'], d['new'])} ({d['reason']})")
        rows.append((f"window {d['window']}: {d['kind']}", what))
    if not t["decisions"]:
        rows.append(("decisions", "none (no rule had the evidence to act)"))
    settings = t["settings"]
    rows.append(("settings now", ", ".join(f"{k}={v}" for k, v in settings.items())))
    return _kv("Warming and tuning", rows)


def render(run: DemoRun, s: dict[str, Any], console: Console) -> None:
    console.print(_header(run, s))
    for table in (_answers(s), _lookalikes(run), _tiers(s), _savings(s), _health(s),
                  _recommendations(s), _engines(s)):
        console.print(table)
    secs = s["seconds"]
    load = s["load_average"]
    console.print(f"Figures from the {s['windows']} analytics windows of the questions "
                  "(CacheAnalytics snapshots; warming's windows are apart).")
    if s["report"]:
        console.print(f"HTML report: [bold]{s['report']}[/]")
    console.print(f"Wall time: {secs['startup']:.1f} s to start, {secs['workload']:.1f} s for "
                  "the questions" + (f"; load average {load[0]:.2f}" if load else ""))
