"""The README says what the code does: its generated configuration reference is current
and its core snippet runs against a real Redis."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_configuration_reference_is_current() -> None:
    from rag_cache_plugin._config import reference_markdown

    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- config-reference -->\n(.*?)<!-- /config-reference -->", text, re.S)
    assert block is not None
    assert block.group(1).strip() == reference_markdown().strip(), \
        "run: python benchmarks/update_readme.py"


def test_the_two_commands_are_named() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_core_snippet_runs(redis_url: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (code,) = [b for b in blocks if "cache.feedback(hit" in b]
    code = code.replace('"redis://localhost:6379"', repr(redis_url))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {"__name__": "__readme__"}
    sys.modules.pop("__readme__", None)
    exec(compile(code, "README.md#core", "exec"), scope)  # our own README, run as written
    cache = scope["cache"]
    try:
        hit = scope["hit"]
        assert hit.kind == "semantic" and hit.value == {"answer": "Paris"}  # type: ignore[attr-defined]
        assert cache.lookup("What is the capital of France?") is None  # type: ignore[attr-defined]
    finally:
        cache.close()  # type: ignore[attr-defined]
