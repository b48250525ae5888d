"""``rag-cache tune``: recorded decisions and recommendations from the history (or
the analytics store), and a shadow analysis of an access trace."""

from __future__ import annotations

import gzip
import json
import lzma
import random
from pathlib import Path

import numpy as np
import pytest
from _tuning_helpers import make_rig, rounds, scan_heavy

from rag_cache_plugin.cli import main
from rag_cache_plugin.tuning import TuningBounds

KEYS = [f"question {i}" for i in range(120)]


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """A process that tuned its TTL up to the bound, then exited."""
    rig = make_rig(tmp_path, ttl=30.0, tuner={"bounds": TuningBounds(max_ttl=120.0)})
    rng = random.Random(7)
    for _ in range(8):
        rig.window(rounds(KEYS, 10, rng))
    rig.analytics.capture_snapshot()
    rig.close()
    return tmp_path


def test_tune_prints_decisions_and_what_the_rules_ask_next(
        recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--history", str(recorded / "cache.tuning.db")]) == 0
    out = capsys.readouterr().out
    assert "change    increase_ttl 30.0 -> 60.0" in out
    assert "keep      increase_ttl 60.0 -> 120.0" in out
    assert "default_ttl=120.0" in out and "max_ttl=120.0" in out
    # Expiry still costs hits, but the TTL is at the user's bound: said, not proposed.
    assert "increase_ttl not possible: TTL is at its bound (120 s)" in out
    assert "nothing is applied from the command line" in out


def test_tune_json_finds_the_history_beside_the_analytics_store(
        recorded: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CACHE_ANALYTICS_PATH", str(recorded / "cache.analytics.db"))
    monkeypatch.delenv("RAG_CACHE_TUNING_PATH", raising=False)
    assert main(["tune", "--json", "--limit", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == str(recorded / "cache.tuning.db") and out["windows"] == 8
    assert [d["kind"] for d in out["decisions"]] == ["change", "keep"]
    assert all(d["reason"] for d in out["decisions"])
    (config,) = out["config"].values()
    assert config["default_ttl"] == 120.0 and config["strategy"] == "balanced"


def test_tune_falls_back_to_the_analytics_store_and_takes_rules_from_json(
        recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"metric": "hit_rate", "comparison": "<", "threshold": 0.99,
                                  "action": "increase_l1", "name": "want-more-hits"}]))
    assert main(["tune", "--path", str(recorded / "cache.analytics.db"),
                 "--history", str(tmp_path / "absent.db"), "--rules", str(rules)]) == 0
    out = capsys.readouterr().out
    assert "[analytics store] increase_l1: want-more-hits" in out
    assert "need the live tuner's sample, or --trace FILE" in out
    with pytest.raises(SystemExit, match="no tuning history and no analytics store"):
        main(["tune", "--path", str(tmp_path / "none.db"), "--history", str(tmp_path / "x")])


def test_tune_trace_runs_a_shadow_analysis(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(4)
    counter = iter(range(0, 10**9, 300))
    trace = scan_heavy([f"h{i}" for i in range(150)], 30, 300, rng, lambda: next(counter))
    text = tmp_path / "trace.txt.gz"
    with gzip.open(text, "wt") as f:
        f.write("\n".join(trace))
    assert main(["tune", "--trace", str(text), "--capacity", "200", "--policy", "lru"]) == 0
    out = capsys.readouterr().out
    assert "18000 accesses, L1 of 200 entries (lru)" in out
    assert "switch_policy lru -> " in out
    ids: dict[str, int] = {}
    codes = np.array([ids.setdefault(k, len(ids)) for k in trace], dtype=">i4")
    binary = tmp_path / "trace.xz"
    with lzma.open(binary, "wb") as f:
        f.write(codes.tobytes())
    assert main(["tune", "--trace", str(binary), "--capacity", "200", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accesses"] == 18000 and report["shadow"]["policy"] == "tinylfu"
    assert report["recommendations"]
