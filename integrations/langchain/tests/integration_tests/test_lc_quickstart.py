"""The README quick starts run as written (the package's README, and the repository's
README once it carries a LangChain snippet)."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest
from langchain_rag_cache import _hooks

ROOT = Path(__file__).resolve().parents[4]
READMES = [ROOT / "integrations" / "langchain" / "README.md", ROOT / "README.md"]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def snippets() -> list[tuple[str, str]]:
    out = []
    for path in READMES:
        if path.exists():
            for i, code in enumerate(_BLOCK.findall(path.read_text())):
                if "langchain_rag_cache" in code and "RagLLMCache" in code:
                    out.append((f"{path.relative_to(ROOT)}#{i}", code))
    return out


def test_the_package_readme_has_a_quick_start_of_ten_lines_at_most() -> None:
    (code,) = [c for name, c in snippets() if name.startswith("integrations")]
    assert len(code.splitlines()) <= 10


@pytest.mark.parametrize(("name", "code"), snippets(), ids=[n for n, _ in snippets()])
def test_quick_start_runs(name: str, code: str, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch, global_cache_guard: None) -> None:
    monkeypatch.chdir(tmp_path)  # cache.db lands here
    for var in ("RAG_CACHE_REDIS_URL", "RAG_CACHE_SQLITE_PATH", "RAG_CACHE_SEMANTIC"):
        monkeypatch.delenv(var, raising=False)
    before = _hooks._FANOUT.handlers
    out = io.StringIO()
    scope: dict[str, object] = {"__name__": "__readme__"}
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, name, "exec"), scope)  # our own README, run as a user would
    finally:
        _hooks._FANOUT.handlers = before  # detach what the snippet attached
        cache = scope.get("cache")
        if cache is not None:
            cache.close()  # type: ignore[attr-defined]
    lines = out.getvalue().splitlines()
    assert lines[0] == "Paris." and len(lines) == 2
    mark = ast.literal_eval(lines[1])
    assert {k: mark[k] for k in ("tier", "kind", "score")} == \
        {"tier": "l1", "kind": "exact", "score": 1.0}
    assert isinstance(mark["id"], str)  # what cache.feedback(...) takes back
    assert (tmp_path / "cache.db").exists()
