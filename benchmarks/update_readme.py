"""Fill the README's generated blocks: the configuration reference (from the config
models' field docs) and the benchmark summary (from ``results/SUMMARY.md``).

    python benchmarks/update_readme.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag_cache_plugin._config import reference_markdown  # noqa: E402

README = ROOT / "README.md"
SUMMARY = ROOT / "benchmarks" / "results" / "SUMMARY.md"


def fill(text: str, name: str, body: str) -> str:
    """Replace what stands between ``<!-- name -->`` and ``<!-- /name -->``."""
    pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no {name} block")
    return pattern.sub(lambda m: m.group(1) + "\n" + body.strip() + "\n\n" + m.group(2), text)


def summary_table() -> str:
    """The first table of SUMMARY.md (the targets), or a pointer when absent."""
    if not SUMMARY.exists():
        return "Run `make bench` to measure."
    text = SUMMARY.read_text(encoding="utf-8")
    table = re.search(r"(\|.*\|\n)+", text)
    machine = re.search(r"^Machine: .*$", text, re.M)
    out = table.group(0) if table else text
    return out + ("\n" + machine.group(0) if machine else "")


def main() -> None:
    text = README.read_text(encoding="utf-8")
    text = fill(text, "config-reference", reference_markdown())
    text = fill(text, "bench-summary", summary_table())
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
