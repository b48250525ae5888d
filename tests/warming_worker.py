"""A separate process warming a list of questions: ``python warming_worker.py '<plan>'``.

The runner appends "<pid> <question>" to the plan's calls file for every answer it
computes, so the test can count computations across processes.  The process says
"ready" and waits for the test's go (a Redis key) so both workers start together.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import redis

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig
from rag_cache_plugin.warming import CacheWarmer


def main() -> None:
    plan: dict[str, Any] = json.loads(sys.argv[1])
    cache = RagCache(CacheConfig(redis=RedisConfig(url=plan["redis"], timeout=5.0),
                                 namespace="faq"))
    warmer = CacheWarmer(cache, log_path=plan["log"], concurrency=4, flush_interval=None)

    async def compute(question: str) -> str:
        with open(plan["calls"], "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {question}\n")
        await asyncio.sleep(0.05)  # long enough for the other process to ask for it too
        return f"answer to {question}"

    print(json.dumps({"ready": os.getpid()}), flush=True)
    client = redis.Redis.from_url(plan["redis"]) if not plan.get("cluster") else \
        redis.cluster.RedisCluster.from_url(plan["redis"])
    deadline = time.monotonic() + 60
    while not client.exists(plan["go"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()
    report = asyncio.run(warmer.warm_questions(plan["questions"], runner=compute,
                                               namespace="faq", progress=False))
    print(json.dumps(report.to_dict()), flush=True)
    warmer.close()
    cache.close()


if __name__ == "__main__":
    main()
