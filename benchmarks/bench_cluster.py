"""Lookups per second of the L3 tier on a local 3-primary Redis Cluster.

    python benchmarks/bench_cluster.py [--seconds 3] [--rounds 5]

``RagCache`` with L1 off and no L2, so every lookup is a Redis round trip:

* sequential ``lookup`` beside a bare redis-py ``RedisCluster.get`` of the same keys
  (rounds alternate between the two, and the medians are compared, so a change in the
  machine's load hits both alike);
* concurrent asyncio lookups: tasks doing ``alookup_many`` batches, and tasks doing
  single ``alookup`` calls;
* ``redis-benchmark --cluster -t get`` on the same cluster: what the servers do for
  a C client.

Every hit is checked against the value stored for its key.  The machine's load
average and this process's CPU time are recorded with each figure: on a shared
machine the wall-clock rate says what was measured, lookups per CPU-second what
the code costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.cluster
from _common import write

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig
from rag_cache_plugin._localredis import LocalCluster

ANSWER = "Redis Cluster shards the keyspace over primaries; Sentinel promotes replicas. "
CONTEXTS = 48  # partitions: their hash slots spread over the three primaries


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def question(i: int) -> tuple[str, str]:
    return f"benchmark question number {i}?", f"system prompt {i % CONTEXTS}"


def value(i: int) -> dict[str, Any]:
    return {"answer": ANSWER + str(i), "i": i}


class Meter:
    """Counts operations for a fixed time; wall and CPU seconds."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, step: Any) -> dict[str, float]:
        ops = 0
        c0, t0 = cpu(), time.perf_counter()
        end = t0 + self.seconds
        while time.perf_counter() < end:
            ops += step()
        wall, used = time.perf_counter() - t0, cpu() - c0
        return {"ops": ops, "per_s": ops / wall, "per_cpu_s": ops / used if used else 0.0}


def sequential(cache: RagCache, bare: redis.cluster.RedisCluster, n: int, seconds: float,
               rounds: int) -> dict[str, Any]:
    names = [cache.l3.data_key(cache.ref(q, context=c))  # type: ignore[union-attr]
             for q, c in map(question, range(n))]
    wrong = 0
    state = {"i": 0}

    def ours() -> int:
        nonlocal wrong
        for _ in range(100):
            i = state["i"] = (state["i"] + 1) % n
            q, c = question(i)
            hit = cache.lookup(q, context=c)
            if hit is None or hit.value != value(i) or hit.tier != "l3":
                wrong += 1
        return 100

    def base() -> int:
        for _ in range(100):
            i = state["i"] = (state["i"] + 1) % n
            if bare.get(names[i]) is None:
                raise RuntimeError("bare GET missed")
        return 100

    # Short slices, alternating, in both orders: the load of a shared machine changes
    # by the second, and each pair of neighbouring slices sees about the same load.
    meter = Meter(seconds / 2)
    ours(), base()  # warm both clients
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "bare": []}
    for k in range(rounds * 2):
        first, second = ("ours", "bare") if k % 2 == 0 else ("bare", "ours")
        for name in (first, second):
            runs[name].append(meter.run(ours if name == "ours" else base))
    med = {k: statistics.median(r["per_s"] for r in v) for k, v in runs.items()}
    med_cpu = {k: statistics.median(r["per_cpu_s"] for r in v) for k, v in runs.items()}
    pairs = [b["per_s"] / o["per_s"] for o, b in zip(runs["ours"], runs["bare"], strict=True)]
    pairs_cpu = [b["per_cpu_s"] / o["per_cpu_s"]
                 for o, b in zip(runs["ours"], runs["bare"], strict=True)]
    return {"ours_per_s": med["ours"], "bare_per_s": med["bare"],
            "ours_per_cpu_s": med_cpu["ours"], "bare_per_cpu_s": med_cpu["bare"],
            "slowdown": statistics.median(pairs),
            "slowdown_cpu": statistics.median(pairs_cpu),
            "rounds": runs, "wrong": wrong}


async def concurrent(cache: RagCache, n: int, seconds: float, *, tasks: int,
                     batch: int) -> dict[str, Any]:
    """``tasks`` tasks, each looping ``alookup_many`` of ``batch`` questions of one
    context (batch 1: plain ``alookup``)."""
    # Questions and expected values built beforehand: the loop measures the cache.
    groups = [[i for i in range(c, n, CONTEXTS)][:batch] for c in range(CONTEXTS)]
    texts = [[question(i)[0] for i in g] for g in groups]
    contexts = [question(g[0])[1] for g in groups]
    expect = [value(i) for i in range(n)]
    count = 0
    wrong = 0
    stop = False

    async def worker(k: int) -> None:
        nonlocal count, wrong
        g = k
        while not stop:
            c = g % CONTEXTS
            ids = groups[c]
            g += tasks
            if batch == 1:
                hits = [await cache.alookup(texts[c][0], context=contexts[c])]
            else:
                hits = await cache.alookup_many(texts[c], context=contexts[c])
            for i, hit in zip(ids, hits, strict=True):
                if hit is None or hit.value != expect[i]:
                    wrong += 1
            count += len(ids)

    await cache.alookup_many([question(i)[0] for i in groups[0][:batch]],
                             context=question(0)[1])  # connect first
    c0, t0 = cpu(), time.perf_counter()
    runners = [asyncio.create_task(worker(k)) for k in range(tasks)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*runners)
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {"tasks": tasks, "batch": batch, "lookups": count, "per_s": count / wall,
            "per_cpu_s": count / used if used else 0.0, "wrong": wrong}


def redis_benchmark(host: str, port: int, pipeline: int, requests: int) -> float | None:
    cmd = ["redis-benchmark", "--cluster", "-h", host, "-p", str(port), "-t", "get",
           "-n", str(requests), "-c", "50", "-P", str(pipeline), "-d", "200", "-q"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                             check=False).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    found = re.findall(r"GET: ([\d.]+) requests per second", out.replace("\r", "\n"))
    return float(found[-1]) if found else None


def _versions() -> str:
    import redis as redis_py

    try:
        import hiredis
        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "pure-Python parser"
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                            check=False).stdout.split()
    v = next((w.split("=")[1] for w in server if w.startswith("v=")), "?")
    return f"redis-py {redis_py.__version__} with {parser}; redis-server {v}."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=8,
                    help="sequential: pairs of ours/bare slices of --seconds")
    ap.add_argument("--keys", type=int, default=4800)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each async setting")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with LocalCluster(3, 0) as cluster:
        cfg = CacheConfig(l1_max_entries=0, redis=RedisConfig(url=cluster.url, timeout=2.0))
        cache = RagCache(cfg)
        for i in range(args.keys):
            assert cache.store(question(i)[0], value(i), context=question(i)[1])
        bare = redis.cluster.RedisCluster.from_url(cluster.url)
        seq = sequential(cache, bare, args.keys, args.seconds, args.rounds)
        bare.close()

        async def all_async() -> list[dict[str, Any]]:
            # Each setting several times, interleaved, so a burst of load elsewhere
            # does not land on one setting only; the median is reported.
            settings = ((8, 100), (16, 50), (4, 100), (64, 1))
            runs: dict[tuple[int, int], list[dict[str, Any]]] = {s: [] for s in settings}
            for _ in range(args.repeats):
                for t, b in settings:
                    runs[(t, b)].append(await concurrent(cache, args.keys, args.seconds,
                                                         tasks=t, batch=b))
            await cache.aclose()
            out = []
            for (t, b), rs in runs.items():
                rates = sorted(r["per_s"] for r in rs)
                out.append({"tasks": t, "batch": b, "runs": rs,
                            "per_s": statistics.median(rates), "min_per_s": rates[0],
                            "max_per_s": rates[-1],
                            "per_cpu_s": statistics.median(r["per_cpu_s"] for r in rs),
                            "wrong": sum(r["wrong"] for r in rs)})
            return out

        conc = asyncio.run(all_async())
        cache.close()
        host, port = cluster.primaries[0].host, cluster.primaries[0].port
        rb = {"get_P1": redis_benchmark(host, port, 1, 100_000),
              "get_P16": redis_benchmark(host, port, 16, 400_000)}
    load_after = os.getloadavg()
    best = max(conc, key=lambda r: r["per_s"])
    data = {"sequential": seq, "concurrent": conc, "redis_benchmark": rb,
            "load_average_before": load_before, "load_average_after": load_after,
            "keys": args.keys, "seconds": args.seconds,
            "targets": {"concurrent_per_s": 50_000, "sequential_slowdown": 1.3}}
    met_c = best["per_s"] >= 50_000
    met_s = seq["slowdown"] <= 1.3

    def yn(ok: bool) -> str:
        return "yes" if ok else "NO"

    rows = [
        "| measure | lookups/s (median) | per CPU-second | target | met |",
        "|---|---|---|---|---|",
        f"| sequential `lookup` (L3 only) | {seq['ours_per_s']:,.0f} | "
        f"{seq['ours_per_cpu_s']:,.0f} | | |",
        f"| sequential bare redis-py `RedisCluster.get` | {seq['bare_per_s']:,.0f} | "
        f"{seq['bare_per_cpu_s']:,.0f} | | |",
        f"| sequential: our time per lookup / bare GET's (median of paired slices) | "
        f"{seq['slowdown']:.2f}x | "
        f"{seq['slowdown_cpu']:.2f}x | "
        f"<= 1.3x | {yn(met_s)} |",
    ]
    for r in conc:
        what = (f"{r['tasks']} tasks x `alookup`" if r["batch"] == 1 else
                f"{r['tasks']} tasks x `alookup_many`({r['batch']})")
        target = ">= 50,000 (best)" if r is best else ""
        rows.append(f"| {what} | {r['per_s']:,.0f} ({r['min_per_s']:,.0f}-"
                    f"{r['max_per_s']:,.0f}) | {r['per_cpu_s']:,.0f} | {target} | "
                    f"{yn(met_c) if r is best else ''} |")
    for k, v in rb.items():
        rows.append(f"| `redis-benchmark --cluster -t get -c 50 -P {k[5:]}` | "
                    f"{v:,.0f} | (C client) | | |" if v else f"| redis-benchmark {k} | n/a | | | |")
    wrong = seq["wrong"] + sum(r["wrong"] for r in conc)
    versions = _versions()
    table = "\n".join(rows) + (
        f"\n\nWrong or missing values: {wrong} (every hit is compared with what was stored)."
        f"\n\nHow: a `LocalCluster` of 3 primaries (no replicas) on loopback, "
        f"{args.keys:,} entries in {CONTEXTS} partitions (hash slots on every primary); "
        f"`RagCache` with L1 off and no L2, so each lookup is a Redis round trip.  "
        f"Sequential rows alternate {args.rounds * 2} pairs of {args.seconds / 2:.1f}-second "
        f"slices of ours and of a bare `RedisCluster.get` of the same keys.  Async rows: "
        f"{args.repeats} interleaved runs of {args.seconds:.0f} s each, median (range); "
        f"`alookup_many`(N) looks up N questions of one "
        f"context (one partition).  'Per CPU-second' divides by this process's CPU time "
        f"only: the three redis-server processes, the client and everything else on the "
        f"machine share its 2 cores.  {versions}\n\n"
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.1f}' for x in load_after)}.  Other work was running "
        f"on the machine: the wall-clock rates move with it by tens of percent between "
        f"runs; the per-CPU-second figures move less.")
    print(table)
    write("cluster", data, "# L3 on a local 3-primary Redis Cluster\n\n" + table)


if __name__ == "__main__":
    main()
