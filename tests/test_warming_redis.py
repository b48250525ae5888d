"""Warming across processes and hosts through a real Redis (standalone and cluster):
two processes warming at once compute each question once, and the query log is
shared so every host ranks the fleet's questions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis
import redis.cluster
from _warming_helpers import Clock, CountingRunner, Workload

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig
from rag_cache_plugin.warming import CacheWarmer

HERE = Path(__file__).parent
ROOT = HERE.parent
QUESTIONS = [f"What does plan {i} include?" for i in range(16)]


@pytest.fixture(params=["standalone", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_url" if request.param == "standalone"
                                       else "cluster_url"))


def _client(url: str) -> redis.Redis | redis.cluster.RedisCluster:
    c = redis.Redis.from_url(url)
    if c.info("cluster").get("cluster_enabled"):
        c.close()
        return redis.cluster.RedisCluster.from_url(url)
    return c


@pytest.mark.redis
@pytest.mark.slow
def test_two_processes_warming_at_once_compute_each_question_once(
        tmp_path: Path, url: str) -> None:
    calls = tmp_path / "calls.txt"
    client = _client(url)
    cluster = isinstance(client, redis.cluster.RedisCluster)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    procs = []
    for i in range(2):
        plan = {"redis": url, "cluster": cluster, "log": str(tmp_path / f"log{i}.db"),
                "calls": str(calls), "go": "test:warming:go", "questions": QUESTIONS}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "warming_worker.py"),
                                       json.dumps(plan)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        for p in procs:  # both are up (imports done) before either starts
            line = p.stdout.readline()  # type: ignore[union-attr]
            assert "ready" in line, p.stderr.read()  # type: ignore[union-attr]
        client.set("test:warming:go", "1")
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err[-3000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
        client.close()
    computed = Counter(line.split(" ", 1)[1] for line in calls.read_text().splitlines())
    assert sorted(computed) == sorted(QUESTIONS) and set(computed.values()) == {1}
    assert sum(r["warmed"] for r in reports) == len(QUESTIONS)
    assert sum(r["failed"] for r in reports) == 0
    reasons = {x["reason"] for r in reports for x in r["results"] if x["status"] == "skipped"}
    assert reasons <= {"being warmed elsewhere", "cached"}
    pids = {line.split(" ", 1)[0] for line in calls.read_text().splitlines()}
    assert len(pids) == 2, "both processes took part"
    # Every answer is in Redis for a third process.
    with RagCache(CacheConfig(redis=RedisConfig(url=url), namespace="faq")) as cache:
        assert all(cache.lookup(q) is not None for q in QUESTIONS)


@pytest.mark.redis
def test_the_query_log_is_shared_through_redis(url: str) -> None:
    clock = Clock()
    config = CacheConfig(redis=RedisConfig(url=url), namespace="shop")
    with RagCache(config, clock=clock) as a, RagCache(config, clock=clock) as b:
        # Two hosts: each its own local log, one shared log in Redis.
        wa = CacheWarmer(a, log_path=None, flush_interval=None)
        wb = CacheWarmer(b, log_path=None, flush_interval=None)
        assert wa.shared is not None
        Workload(a).run(["Is it in stock?"] * 3)
        Workload(b).run(["Is it in stock?"] * 2 + ["Do you deliver on Sunday?"] * 4)
        wb.flush()
        by_q = {p.question: p for p in wa.analyze_query_patterns()}
        assert by_q["Is it in stock?"].total == 5 and by_q["Is it in stock?"].misses == 1
        assert by_q["Do you deliver on Sunday?"].total == 4
        # The local logs only know their own host's questions.
        assert {r.question for r in wa.log.rows()} == {"Is it in stock?"}
        assert len(wa.log.rows()) == 1 and wa.log.rows()[0].total == 3
        wa.close()
        wb.close()


@pytest.mark.redis
async def test_warming_skips_a_key_another_process_holds(redis_url: str) -> None:
    config = CacheConfig(redis=RedisConfig(url=redis_url))
    async with RagCache(config) as a, RagCache(config) as b:
        wa = CacheWarmer(a, log_path=None, flush_interval=None)
        wb = CacheWarmer(b, log_path=None, flush_interval=None)
        ref = a.ref("contended question")
        assert await wa.locks.atry_lead(ref)  # process A is warming it
        runner = CountingRunner()
        report = await wb.warm_questions(["contended question"], runner=runner)
        assert [(r.status, r.reason) for r in report.results] == [
            ("skipped", "being warmed elsewhere")]
        await wa.locks.arelease(ref)
        report = await wb.warm_questions(["contended question"], runner=runner)
        assert report.warmed == 1 and runner.calls == ["contended question"]
        wa.close()
        wb.close()
