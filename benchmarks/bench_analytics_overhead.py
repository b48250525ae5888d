"""What analytics costs on the hot path: an L1 hit with ``CacheAnalytics`` on
versus off, in the same run.

    python benchmarks/bench_analytics_overhead.py [--rounds 60] [--lookups 10000] [--out DIR]

Rounds alternate off / events-only / on so machine noise hits every mode alike.
"on" is the full engine with its defaults: the listener, the background thread
draining the queued hits every second, and a real SQLite snapshot store
(``--interval`` sets how often it captures; the default is the engine's 60 s).
"events-only" subscribes a listener that does nothing for ``Miss`` events (none
happen): the part of the cost that is the core timing a lookup while someone
listens.  The
verdict uses the median of the per-round on/off ratios; the target is at most 1.5x.
Writes ``results/analytics_overhead.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from rag_cache_plugin import CacheConfig, RagCache  # noqa: E402
from rag_cache_plugin._events import Miss  # noqa: E402
from rag_cache_plugin.analytics import CacheAnalytics  # noqa: E402

TARGET = 1.5
QUESTIONS = [f"What is the refund policy for order type {i}?" for i in range(64)]


def _time_hits(cache: RagCache, n: int) -> float:
    """Seconds per L1 hit over ``n`` lookups."""
    lookup, qs, m = cache.lookup, QUESTIONS, len(QUESTIONS)
    start = time.perf_counter()
    for i in range(n):
        lookup(qs[i % m])
    return (time.perf_counter() - start) / n


def run(rounds: int, lookups: int, store_dir: Path, interval: float = 60.0) -> dict[str, Any]:
    cache = RagCache(CacheConfig())
    for q in QUESTIONS:
        cache.store(q, {"answer": q[::-1]})
    _time_hits(cache, lookups)  # warm up: memo, caches, branch predictors
    samples: dict[str, list[float]] = {"off": [], "events": [], "on": []}
    counted = 0
    for r in range(rounds):
        samples["off"].append(_time_hits(cache, lookups))
        unsubscribe = cache.bus.subscribe(lambda ev: None, (Miss,))
        samples["events"].append(_time_hits(cache, lookups))
        unsubscribe()
        analytics = CacheAnalytics(cache, interval=interval, store_path=store_dir / f"a{r}.db",
                                   autostart=True)
        samples["on"].append(_time_hits(cache, lookups))
        analytics.close()  # stops the thread and captures the rest
        counted += sum(s.hits("l1") for s in analytics.history)
        gc.collect()
    cache.close()
    paired = [on / off for on, off in zip(samples["on"], samples["off"], strict=True)]
    events = [ev / off for ev, off in zip(samples["events"], samples["off"], strict=True)]
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "benchmark": "analytics_overhead",
        "target_ratio": TARGET,
        "rounds": rounds,
        "lookups_per_round": lookups,
        "capture_interval_s": interval,
        "us_per_hit_median": {k: round(v * 1e6, 3) for k, v in med.items()},
        "us_per_hit_min": {k: round(min(v) * 1e6, 3) for k, v in samples.items()},
        "ratio_on_off_median_of_rounds": round(statistics.median(paired), 3),
        "ratio_on_off_of_minimums": round(min(samples["on"]) / min(samples["off"]), 3),
        "ratio_events_only_off": round(statistics.median(events), 3),
        "listener_us_per_hit": round((med["on"] - med["events"]) * 1e6, 3),
        "event_us_per_hit": round((med["events"] - med["off"]) * 1e6, 3),
        "hits_counted_exactly": counted == rounds * lookups,
        "passed": statistics.median(paired) <= TARGET,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown(res: dict[str, Any]) -> str:
    med, mn = res["us_per_hit_median"], res["us_per_hit_min"]
    lines = [
        "# Analytics overhead on an L1 hit",
        "",
        f"{res['rounds']} alternating rounds of {res['lookups_per_round']:,} L1 hits "
        f"(snapshots every {res['capture_interval_s']:g} s); "
        f"Python {res['machine']['python']}, {res['machine']['cpus']} CPUs, load average "
        f"{res['machine']['load_average'][0]:.2f} at the start.",
        "",
        "| mode | µs per hit (median) | µs per hit (best) |",
        "|---|---:|---:|",
        f"| analytics off | {med['off']:.3f} | {mn['off']:.3f} |",
        f"| timing only (a listener for misses) | {med['events']:.3f} | {mn['events']:.3f} |",
        f"| analytics on | {med['on']:.3f} | {mn['on']:.3f} |",
        "",
        f"- on / off, median of per-round ratios: **{res['ratio_on_off_median_of_rounds']}x** "
        f"(target ≤ {res['target_ratio']}x: {'met' if res['passed'] else 'NOT met'})",
        f"- on / off, best of each: {res['ratio_on_off_of_minimums']}x",
        f"- timing the lookup (core): {res['event_us_per_hit']} µs; "
        f"recording the hit and the background thread: {res['listener_us_per_hit']} µs",
        f"- every hit counted: {res['hits_counted_exactly']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=60.0,
                        help="snapshot interval of the engine under test, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rag-cache-bench-") as tmp:
        res = run(args.rounds, args.lookups, Path(tmp), args.interval)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "analytics_overhead.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "analytics_overhead.md").write_text(markdown(res))
    print(markdown(res))
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
