"""Two real processes share hits through L2 (one SQLite file) and through L3 (Redis
standalone and Redis Cluster), and a document change made in one process
invalidates the other's entries in every tier, its L1 included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from li_support import ScriptedLLM
from li_worker import make_cache, make_engine

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
Q_FR = "What is the capital of France?"
Q_DE = "What is the capital of Germany?"
NEW_FR = "Lyon is the capital of France. The Rhone flows through Lyon."


def run_worker(plan: dict[str, Any]) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), str(ROOT), str(ROOT / "integrations" / "llama_index")])}
    out = subprocess.run([sys.executable, str(HERE / "li_worker.py"), json.dumps(plan)],
                         capture_output=True, text=True, env=env, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(params=["l2", "l3", "cluster"])
def plan(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "l2":
        return {"sqlite": str(tmp_path / "shared.db"), "redis": None, "tier": "l2"}
    fixture = "redis_url" if request.param == "l3" else "cluster_url"
    return {"sqlite": None, "redis": request.getfixturevalue(fixture), "tier": "l3"}


@pytest.mark.slow
def test_processes_share_hits_and_invalidations(plan: dict[str, Any]) -> None:
    llm = ScriptedLLM()
    with make_cache(plan) as cache:
        _, engine = make_engine(cache, llm)
        assert "Paris" in str(engine.query(Q_FR))
        engine.query(Q_DE)
        assert llm.calls == 2 and cache.info()["l1_entries"] == 2

        # Another process: both answers come from the shared tier; then it updates
        # the French document (its watch invalidates what was built from it).
        head, fr, de, refreshed = run_worker(
            {**plan, "steps": [{"query": Q_FR}, {"query": Q_DE}, {"refresh": {"fr": NEW_FR}}]})
        assert head["cache_id"] == engine.cache_id
        for step in (fr, de):
            assert (step["tier"], step["llm_calls"]) == (plan["tier"], 0)
        assert "Paris" in fr["answer"] and refreshed == {"refreshed": ["fr"]}

        # This process hears of it: its L1 keeps only the German answer.
        assert wait_until(lambda: cache.info()["l1_entries"] == 1)
        _, engine = make_engine(cache, llm, {"fr": NEW_FR})  # same index, new text
        assert "Lyon" in str(engine.query(Q_FR)) and llm.calls == 3
        assert "Berlin" in str(engine.query(Q_DE)) and llm.calls == 3

    # A third process gets the new answer, and the surviving one, from the shared tier.
    _, fr, de = run_worker({**plan, "steps": [{"query": Q_FR}, {"query": Q_DE}]})
    assert (fr["tier"], fr["llm_calls"], de["tier"]) == (plan["tier"], 0, plan["tier"])
    assert "Lyon" in fr["answer"] and "Berlin" in de["answer"]
