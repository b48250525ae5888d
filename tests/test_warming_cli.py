"""``rag-cache warm``: from a file with a runner named ``module:attribute``, the run
history, dry runs, and runner targets that must be refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rag_cache_plugin import CacheConfig, RagCache
from rag_cache_plugin.cli import main
from rag_cache_plugin.warming import CallableRunner, QueryEngineRunner, load_runner

RUNNER = '''
import asyncio

calls = []

async def answer(question):
    calls.append(question)
    if question == "fail me":
        raise RuntimeError("no answer")
    return "A: " + question

class Engine:
    async def aquery(self, question):
        return "engine: " + question

engine = Engine()
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "faq_runner_mod.py").write_text(RUNNER)
    yield tmp_path
    sys.modules.pop("faq_runner_mod", None)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["warm", *args])
    return code, capsys.readouterr().out


def test_warm_from_a_file_then_show_the_history(app: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = app / "cache.db"
    (app / "faq.json").write_text(json.dumps(["Opening hours?", {"question": "Returns?"},
                                              "fail me"]))
    common = ["--sqlite", str(db), "--app-dir", str(app), "--json", "--retries", "0"]
    code, out = run_cli(capsys, "--file", str(app / "faq.json"),
                        "--runner", "faq_runner_mod:answer", *common)
    report = json.loads(out)
    assert code == 1  # one question failed
    assert (report["warmed"], report["failed"], report["source"]) == (2, 1, "file:faq.json")
    assert (app / "cache.warming.db").exists()  # the run history beside the L2 file
    with RagCache(CacheConfig(sqlite_path=db)) as cache:
        hit = cache.lookup("Returns?")
        assert hit is not None and hit.value == "A: Returns?"
    code, out = run_cli(capsys, "--file", str(app / "faq.json"),
                        "--runner", "faq_runner_mod:engine", *common)
    assert code == 0 and [r["reason"] or r["stored_by"] for r in json.loads(out)["results"]
                          ] == ["cached", "cached", "warmer"]
    code, out = run_cli(capsys, "--history", "--sqlite", str(db), "--json")
    history = json.loads(out)
    assert code == 0 and len(history["runs"]) == 2
    assert history["stats"]["warmed"] == 3 and history["stats"]["failed"] == 1
    code, out = run_cli(capsys, "--dry-run", "--sqlite", str(db), "--json")
    assert code == 0 and json.loads(out) == []  # nothing asked by users yet


@pytest.mark.parametrize("target", [
    "os:system", "subprocess:run", "builtins:eval", "faq_runner_mod:__dict__",
    "faq_runner_mod:_private", "faq_runner_mod:answer; import os", "faq_runner_mod",
    "__import__('os'):system"])
def test_runner_targets_that_are_refused(app: Path, target: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        load_runner(target)
    with pytest.raises(SystemExit) as exc:
        main(["warm", "--sqlite", str(app / "c.db"), "--app-dir", str(app),
              "--file", str(app / "faq_runner_mod.py"), "--runner", target])
    assert "runner" in str(exc.value) or "allowed" in str(exc.value)


def test_the_allow_list(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(app))
    assert isinstance(load_runner("faq_runner_mod:answer"), CallableRunner)
    assert isinstance(load_runner("faq_runner_mod:engine"), QueryEngineRunner)
    monkeypatch.setenv("RAG_CACHE_WARM_RUNNERS", "myapp.runners, other")
    with pytest.raises(ValueError, match="not in the allowed"):
        load_runner("faq_runner_mod:answer")
    assert isinstance(load_runner("faq_runner_mod:answer", ["faq_runner_mod"]), CallableRunner)
