"""A separate process working on one L2 file, for the SQLite fault tests.

    python -m tests.support.sqlite_worker load PATH SECONDS WORKER  -> JSON on stdout
    python -m tests.support.sqlite_worker hold PATH ROWS            -> "in-transaction", then waits
    python -m tests.support.sqlite_worker churn PATH                -> stores until killed
    python -m tests.support.sqlite_worker probe PATH [--chmod]      -> JSON on stdout

``load`` reads and writes shared keys from two threads and four asyncio tasks and
reports what it saw: operations, exceptions, events, values that belong to another
key or fail their checksum (``wrong``).  ``probe`` opens a cache on a file that may
be read-only and reports what happened (``--chmod`` makes the file read-only while
the cache is open first).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rag_cache_plugin import CacheConfig, EventBus, RagCache, TierFailed

KEYS = 200


def value(i: int, worker: int, ver: int) -> dict[str, Any]:
    check = hashlib.blake2b(f"{i}:{worker}:{ver}".encode(), digest_size=8).hexdigest()
    return {"i": i, "worker": worker, "ver": ver, "check": check, "pad": "x" * (i % 50) * 20}


def is_right(i: int, v: Any) -> bool:
    return (isinstance(v, dict) and v.get("i") == i
            and v == value(i, v.get("worker", -1), v.get("ver", -1)))


def question(i: int) -> str:
    return f"shared question {i}"


def _events(bus: EventBus) -> Counter[str]:
    seen: Counter[str] = Counter()

    def count(e: Any) -> None:
        seen[type(e).__name__ + ("/" + e.tier if hasattr(e, "tier") else "")] += 1

    bus.subscribe(count)
    return seen


def load(path: str, seconds: float, worker: int) -> dict[str, Any]:
    bus = EventBus()
    seen = _events(bus)
    stats: Counter[str] = Counter()
    errors: list[str] = []
    stop = time.monotonic() + seconds
    cfg = CacheConfig(sqlite_path=Path(path), l1_max_entries=0, news_poll_interval=0.05)
    with RagCache(cfg, bus=bus) as cache:
        ver = [0]

        def op(rng: random.Random) -> tuple[str, int, Any]:
            i = rng.randrange(KEYS)
            r = rng.random()
            if r < 0.3:
                ver[0] += 1
                return "store", i, value(i, worker, ver[0])
            if r < 0.33:
                return "invalidate", i % 10, None
            if r < 0.35:
                return "delete", i, None
            return "lookup", i, None

        def judge(i: int, hit: Any) -> None:
            if hit is None:
                stats["miss"] += 1
            elif not is_right(i, hit.value):
                stats["wrong"] += 1
            else:
                stats["hit" if hit.value["worker"] == worker else "peer_hit"] += 1

        def thread(n: int) -> None:
            rng = random.Random(worker * 100 + n)
            while time.monotonic() < stop:
                kind, i, v = op(rng)
                try:
                    if kind == "store":
                        cache.store(question(i), v, tags=[f"t{i % 10}"])
                    elif kind == "invalidate":
                        cache.invalidate(tags=[f"t{i}"])
                    elif kind == "delete":
                        cache.delete(question(i))
                    else:
                        judge(i, cache.lookup(question(i)))
                    stats[kind] += 1
                except Exception as exc:
                    errors.append(f"{kind}: {type(exc).__name__}: {exc}")

        async def task(n: int) -> None:
            rng = random.Random(worker * 100 + 50 + n)
            while time.monotonic() < stop:
                kind, i, v = op(rng)
                try:
                    if kind == "store":
                        await cache.astore(question(i), v, tags=[f"t{i % 10}"])
                    elif kind == "invalidate":
                        await cache.ainvalidate(tags=[f"t{i}"])
                    elif kind == "delete":
                        await cache.adelete(question(i))
                    else:
                        judge(i, await cache.alookup(question(i)))
                    stats[kind] += 1
                except Exception as exc:
                    errors.append(f"a{kind}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0)

        async def tasks() -> None:
            await asyncio.gather(*(task(n) for n in range(4)))
            # Close this loop's aiosqlite connection; the cache stays open.
            assert cache.l2 is not None
            pair = cache.l2._async.pop(asyncio.get_running_loop(), None)
            if pair is not None:
                await pair[0].close()

        threads = [threading.Thread(target=thread, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        asyncio.run(tasks())
        for t in threads:
            t.join()
    return {"ops": sum(stats[k] for k in ("store", "lookup", "invalidate", "delete")),
            **stats, "exceptions": len(errors), "errors": errors[:5], "events": dict(seen)}


def hold(path: str, rows: int) -> None:
    """Open a write transaction, write ``rows`` rows, say so, and wait to be killed."""
    with RagCache(CacheConfig(sqlite_path=Path(path))) as cache:
        assert cache.l2 is not None
        with cache.l2._write() as conn:
            for i in range(rows):
                conn.execute(
                    "INSERT INTO entries (key, ns, partition, store_time, access_time, size,"
                    " value) VALUES (?, 'uncommitted', 'p', 0, 0, 1000, ?)",
                    (f"uncommitted-{i}", os.urandom(1000)))
            print("in-transaction", flush=True)
            time.sleep(3600)


def churn(path: str) -> None:
    """Store, overwrite, invalidate until killed (some kill lands mid-transaction)."""
    rng = random.Random(os.getpid())
    with RagCache(CacheConfig(sqlite_path=Path(path), l1_max_entries=0,
                              l2_max_bytes=2 * 1024 * 1024)) as cache:
        print("started", flush=True)
        n = 0
        while True:
            n += 1
            i = rng.randrange(KEYS)
            cache.store(question(i), value(i, os.getpid(), n) | {"blob": "y" * 20_000},
                        tags=[f"t{i % 10}"])
            if n % 25 == 0:
                cache.invalidate(tags=[f"t{rng.randrange(10)}"])


def probe(path: str, chmod_while_open: bool) -> dict[str, Any]:
    """Use a cache on ``path`` (maybe read-only) and report what happened."""
    bus = EventBus()
    seen = _events(bus)
    failed: list[str] = []

    def tier_failed(e: Any) -> None:
        failed.append(f"{e.op}: {e.error}")

    bus.subscribe(tier_failed, (TierFailed,))
    out: dict[str, Any] = {"uid": os.getuid()}
    errors: list[str] = []
    try:
        with RagCache(CacheConfig(sqlite_path=Path(path), l1_max_entries=0), bus=bus) as cache:
            out["l2"] = cache.l2 is not None
            if chmod_while_open:
                os.chmod(path, 0o444)
            # New threads open new connections: after the chmod, read-only ones.
            results: dict[str, Any] = {}

            def work() -> None:
                try:
                    results["seeded"] = [cache.lookup(question(i)) is not None for i in range(3)]
                    results["stored"] = cache.store("new question", {"v": 1})
                    results["after_store"] = cache.lookup("new question") is not None
                    results["miss"] = cache.lookup("never stored") is None
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

            t = threading.Thread(target=work)
            t.start()
            t.join()
            out.update(results)

            async def awork() -> None:
                try:
                    out["astored"] = await cache.astore("async question", {"v": 2})
                    out["alookup_miss"] = await cache.alookup("never stored") is None
                except Exception as exc:
                    errors.append(f"async {type(exc).__name__}: {exc}")

            asyncio.run(awork())
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    out["exceptions"] = len(errors)
    out["errors"] = errors
    out["events"] = dict(seen)
    out["tier_errors"] = sorted(set(failed))[:3]
    return out


def main(argv: list[str]) -> None:
    mode, path = argv[0], argv[1]
    if mode == "load":
        print(json.dumps(load(path, float(argv[2]), int(argv[3]))))
    elif mode == "hold":
        hold(path, int(argv[2]))
    elif mode == "churn":
        churn(path)
    elif mode == "probe":
        print(json.dumps(probe(path, "--chmod" in argv)))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
