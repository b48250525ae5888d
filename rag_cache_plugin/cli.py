"""The ``rag-cache`` command.  Each subcommand lives in ``rag_cache_plugin._cli.<name>``
with ``add_arguments(parser)`` and ``run(args) -> int``, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

COMMANDS: dict[str, str] = {
    "demo": "Run the demo RAG application on the embedded default (memory + SQLite)",
    "stats": "Show cache statistics (a table, or JSON)",
    "report": "Write the self-contained HTML dashboard",
    "warm": "Warm the cache from the query log or a file of questions",
    "tune": "Analyse metrics and tune the cache (or only recommend, with --dry-run)",
    "redis": "Redis operations: local clusters, configuration profiles, health, ACL",
    "bench": "Run the benchmarks",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-cache", description="Three-tier cache for LLM answers and RAG retrievals.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(f"rag_cache_plugin._cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rag_cache_plugin._cli.{name}":
                raise
            continue
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        print(f"rag-cache {args.command}: not available in this installation", file=sys.stderr)
        return 2
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
