"""``rag-cache tune``: what the tuner decided and would do next, from its recorded
history (or the analytics store), or a shadow analysis of an access trace.

A command line cannot reach into another process's cache, so nothing is applied
from here: the running process applies changes through its ``CacheTuner``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .stats import parse_since


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--history", type=Path, default=None,
                        help="tuning history (default: $RAG_CACHE_TUNING_PATH, else "
                             "<cache>.tuning.db beside the analytics store)")
    parser.add_argument("--path", type=Path, default=None,
                        help="analytics store, used when there is no tuning history yet "
                             "(default: $RAG_CACHE_ANALYTICS_PATH, else from "
                             "$RAG_CACHE_SQLITE_PATH)")
    parser.add_argument("--since", default=None, metavar="DURATION",
                        help="only the last DURATION (e.g. 30m, 6h, 7d)")
    parser.add_argument("--rules", type=Path, default=None,
                        help="JSON file with a list of rules (default: the built-in rules)")
    parser.add_argument("--limit", type=int, default=20, help="decisions to show (default 20)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="instead: shadow-simulate this access trace (text, one key a "
                             "line, optionally .gz; or .xz of big-endian int32 keys)")
    parser.add_argument("--capacity", type=int, default=10_000,
                        help="with --trace: L1 capacity in entries (default 10000)")
    parser.add_argument("--policy", default="tinylfu",
                        help="with --trace: the policy L1 uses now (default tinylfu)")
    parser.add_argument("--last", type=int, default=200_000,
                        help="with --trace: simulate only the last N accesses")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _rules(args: argparse.Namespace) -> Any:
    from ..tuning import DEFAULT_RULES, load_rules

    if args.rules is None:
        return DEFAULT_RULES
    return load_rules(json.loads(args.rules.read_text()))


def _read_trace(path: Path, last: int) -> list[Any]:
    import gzip
    import lzma

    if path.suffix == ".xz":
        import numpy as np

        with lzma.open(path) as f:
            return np.frombuffer(f.read(), dtype=">i4")[-last:].tolist()  # type: ignore[no-any-return]
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return [line.strip() for line in f if line.strip()][-last:]


def _trace(args: argparse.Namespace) -> dict[str, Any]:
    from ..tuning import run_shadow

    keys = _read_trace(args.trace, args.last)
    if not keys:
        raise SystemExit(f"rag-cache tune: {args.trace}: no accesses")
    report = run_shadow(keys, rate=1.0, policy=args.policy, capacity=args.capacity,
                        policies=("lru", "lfu", "tinylfu", "s3fifo"), grow=(2.0, 4.0, 8.0),
                        shrink=0.5)
    advice = []
    if report.policy_gain >= 0.03:
        advice.append(f"switch_policy {args.policy} -> {report.best_policy} "
                      f"(+{100 * report.policy_gain:.1f} points)")
    if report.grow_factor is not None and report.grow_gain >= 0.02:
        advice.append(f"increase_l1 to {round(args.capacity * report.grow_factor)} entries "
                      f"(+{100 * report.grow_gain:.1f} points)")
    if report.shrink_loss is not None and report.shrink_loss <= 0.002:
        advice.append(f"decrease_l1 to {args.capacity // 2} entries (loses "
                      f"{100 * report.shrink_loss:.2f} points)")
    return {"trace": str(args.trace), "accesses": len(keys), "shadow": report.to_dict(),
            "recommendations": advice or ["nothing: the current policy and size are fine"]}


def _history(args: argparse.Namespace) -> dict[str, Any]:
    from ..analytics import SnapshotStore, default_store_path
    from ..tuning import TuningHistory, default_history_path

    since = parse_since(args.since)
    store_path = args.path or default_store_path()
    path = args.history or default_history_path(store_path)
    if path is not None and Path(path).exists():
        history = TuningHistory(path)
        try:
            windows = history.windows(since)
            decisions = history.decisions(since, args.limit)
        finally:
            history.close()
        latest: dict[str, dict[str, Any]] = {}
        for w in windows:  # the newest window of each process
            latest[w["proc"]] = w
        recs = [_recommend_recorded(args, w, f"{proc}, window {w['window']}")
                for proc, w in sorted(latest.items())]
        return {"source": str(path), "windows": len(windows),
                "config": {p: w["config"] for p, w in latest.items()},
                "decisions": [d.to_dict() for d in decisions],
                "recommendations": [r for rs in recs for r in rs]}
    if store_path is None or not Path(store_path).exists():
        raise SystemExit("rag-cache tune: no tuning history and no analytics store; pass "
                         "--history or --path (or --trace FILE for a shadow analysis)")
    from .._tuning.window import tuner_metrics
    from ..analytics import MetricSnapshot

    store = SnapshotStore(store_path)
    try:
        snap = MetricSnapshot.merge(store.snapshots(since))
    finally:
        store.close()
    metrics = tuner_metrics(snap, None)
    advice = _recommend(args, metrics, "analytics store")
    advice.append("shadow-simulation rules (eviction policy, L1 size) need the live tuner's "
                "sample, or --trace FILE")
    return {"source": str(store_path), "windows": 0, "config": {}, "decisions": [],
            "recommendations": advice}


def _recommend(args: argparse.Namespace, metrics: dict[str, Any], where: str) -> list[str]:
    out = []
    for rule in _rules(args):
        if rule.fires(metrics):
            out.append(f"[{where}] {rule.action}: {rule.name}: {rule.metric} = "
                       f"{metrics.get(rule.metric):.4g} {rule.comparison} {rule.threshold:g}"
                       + (f" ({rule.description})" if rule.description else ""))
    return out or [f"[{where}] nothing: no rule fires"]


def _recommend_recorded(args: argparse.Namespace, window: dict[str, Any], where: str
                        ) -> list[str]:
    from .._tuning.offline import recorded_need

    need = recorded_need(_rules(args), window)
    return [f"[{where}] {r}" for r in need.reasons] or [f"[{where}] nothing: no rule fires"]


def run(args: argparse.Namespace) -> int:
    out = _trace(args) if args.trace is not None else _history(args)
    if args.json:
        json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
        print()
        return 0
    print(f"rag-cache tune: {out.get('source') or out.get('trace')}")
    if "shadow" in out:
        s = out["shadow"]
        print(f"{out['accesses']} accesses, L1 of {s['capacity']} entries ({s['policy']}):")
        for name, ratio in sorted(s["policies"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:8s} {100 * ratio:6.2f}% hits")
        for factor, ratio in sorted(s["sizes"].items(), key=lambda kv: float(kv[0])):
            print(f"  {s['policy']} x{float(factor):g} capacity: {100 * ratio:6.2f}% hits")
    for proc, cfg in out.get("config", {}).items():
        bounds = cfg.get("bounds") or {}
        print(f"settings of {proc}: " + ", ".join(f"{k}={v}" for k, v in cfg.items()
                                                  if k != "bounds"))
        print("  bounds: " + ", ".join(f"{k}={v}" for k, v in bounds.items()))
    if out.get("decisions"):
        print("decisions (oldest first):")
        for d in out["decisions"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["ts"]))
            print(f"  {when} w{d['window']} {d['kind']:9s} {d['action']} "
                  f"{json.dumps(d['old'])} -> {json.dumps(d['new'])}: {d['reason']}")
    print("recommendations:")
    for r in out["recommendations"]:
        print(f"  {r}")
    print("(nothing is applied from the command line: a running process applies "
          "changes through its CacheTuner)")
    return 0
