"""The README's quick start runs as written (with local stand-ins for the models)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
README = HERE.parent / "README.md"

PRELUDE = """
from llama_index.core import MockEmbedding, Settings
from llama_index.core.llms import MockLLM
Settings.llm, Settings.embed_model = MockLLM(max_tokens=6), MockEmbedding(embed_dim=8)
"""
EPILOGUE = """
from rag_cache_plugin import Hit, Miss
seen = []
cache.bus.subscribe(seen.append, (Hit, Miss))
engine.query("What is the capital of France?")
print("EVENTS", [(type(e).__name__, getattr(e, "tier", "")) for e in seen])
index.refresh_ref_docs([Document(text="Lyon is the capital of France.", id_="fr")])
print("L1", cache.info()["l1_entries"])
"""


READMES = [README, ROOT / "README.md"]  # the package's and the repository's


def quick_start(readme: Path = README) -> str:
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "CachedQueryEngine(" in b]
    return block


@pytest.mark.parametrize("readme", READMES, ids=["package", "repository"])
def test_quick_start_is_ten_lines(readme: Path) -> None:
    assert len(quick_start(readme).strip().splitlines()) <= 11  # ten lines and one blank


@pytest.mark.parametrize("readme", READMES, ids=["package", "repository"])
def test_quick_start_runs(readme: Path, tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(PRELUDE + quick_start(readme) + EPILOGUE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "integrations" / "llama_index")])}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == lines[1] and lines[0].strip()  # the cached answer is the answer
    assert "EVENTS [('Hit', 'l1')]" in out.stdout
    assert "L1 0" in out.stdout  # the watched refresh dropped the answer about "fr"
    assert (tmp_path / "rag-cache.db").exists()
