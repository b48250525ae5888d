"""``rag-cache warm``: warm the cache from its query log or from a file of questions
with a runner named ``module:attribute`` (imported by name, never evaluated)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("what to warm (default: the best of the query log)")
    src.add_argument("--file", type=Path, default=None,
                     help="questions: text (one per line), .json (a list) or .jsonl")
    src.add_argument("--context", default="", help="context of the file's questions")
    src.add_argument("--llm-string", default="", help="model settings of the file's questions")
    src.add_argument("--namespace", default=None, help="namespace of the file's questions")
    src.add_argument("--ttl", type=float, default=None, help="TTL of entries warmed from a file")
    src.add_argument("--no-refresh", action="store_true",
                     help="do not refresh popular entries that are about to expire")
    how = parser.add_argument_group("how")
    how.add_argument("--runner", metavar="MODULE:ATTRIBUTE",
                     help="what computes answers: a LangChain Runnable, a LlamaIndex query "
                          "engine or a callable taking the question")
    how.add_argument("--allow", action="append", default=[], metavar="MODULE",
                     help="allowed runner module (repeat; also RAG_CACHE_WARM_RUNNERS, "
                          "comma separated); the standard library is never allowed")
    how.add_argument("--app-dir", default=".",
                     help="directory put first on the import path for --runner (default: .)")
    how.add_argument("--max-tasks", type=int, default=50)
    how.add_argument("--max-tokens", type=int, default=None)
    how.add_argument("--max-cost", type=float, default=None, help="US dollars per run")
    how.add_argument("--concurrency", type=int, default=4)
    how.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    how.add_argument("--retries", type=int, default=2)
    how.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                     help="US dollars per million input and output tokens (repeat)")
    where = parser.add_argument_group("cache (else the RAG_CACHE_* variables)")
    where.add_argument("--sqlite", type=Path, default=None, help="the L2 file")
    where.add_argument("--redis", default=None, metavar="URL", help="the L3 Redis")
    where.add_argument("--log", type=Path, default=None,
                       help="the query log (default: <L2 file>.warming.db)")
    out = parser.add_argument_group("output")
    out.add_argument("--dry-run", action="store_true", help="list the tasks, compute nothing")
    out.add_argument("--history", nargs="?", type=int, const=20, default=None, metavar="N",
                     help="show the last N runs (default 20) and exit")
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def _prices(items: list[str]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        parts = value.split(",")
        if not sep or len(parts) != 2:
            raise SystemExit(f"rag-cache warm: --price wants MODEL=IN,OUT, not {item!r}")
        out[name.strip()] = (float(parts[0]), float(parts[1]))
    return out


def _cache(args: argparse.Namespace) -> Any:
    from .. import CacheConfig, RagCache, RedisConfig

    overrides: dict[str, Any] = {}
    if args.sqlite is not None:
        overrides["sqlite_path"] = args.sqlite
    if args.redis:
        overrides["redis"] = RedisConfig(url=args.redis)
    return RagCache(CacheConfig.from_env(**overrides))


def _print(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    print()


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..warming import Budget, CacheWarmer, Retry, load_runner

    if args.app_dir and args.app_dir not in sys.path:
        sys.path.insert(0, str(Path(args.app_dir).resolve()))
    cache = _cache(args)
    warmer = CacheWarmer(
        cache, log_path=args.log if args.log is not None else "auto",
        budget=Budget(args.max_tasks, args.max_tokens, args.max_cost),
        concurrency=args.concurrency, price_table=_prices(args.price) or None,
        retry=Retry(retries=args.retries, timeout=args.timeout), flush_interval=None)
    try:
        if args.history is not None:
            return _history(warmer, args)
        if args.file is not None:
            tasks = warmer.tasks_from_questions(
                _questions(args.file), context=args.context, llm_string=args.llm_string,
                namespace=args.namespace, ttl=args.ttl)
            source = f"file:{args.file.name}"
        else:
            tasks = warmer.create_warming_tasks(refresh=not args.no_refresh)
            source = "log"
        if args.dry_run:
            return _dry_run(tasks, args)
        if not args.runner:
            raise SystemExit("rag-cache warm: --runner MODULE:ATTRIBUTE is required "
                             "(or --dry-run)")
        try:
            runner = load_runner(args.runner, args.allow)
        except (ValueError, ImportError, AttributeError, TypeError) as exc:
            raise SystemExit(f"rag-cache warm: {exc}") from exc

        async def main() -> Any:
            try:
                return await warmer.execute_warming(
                    tasks, runner=runner, source=source,
                    progress=False if args.no_progress or args.json else None)
            finally:
                from .._warming.scheduler import release_loop

                await release_loop(cache)

        report = asyncio.run(main())
    finally:
        warmer.close()
        cache.close()
    if args.json:
        _print(report.to_dict())
    else:
        _table(f"rag-cache warm: run {report.run_id} ({source})",
               ["question", "kind", "status", "detail", "attempts", "cost"],
               [[r.question[:60], r.kind, r.status, r.reason or r.stored_by, str(r.attempts),
                 f"${r.cost:.6f}"] for r in report.results])
        print(f"warmed {report.warmed} (refreshed {report.refreshed}), skipped "
              f"{report.skipped}, failed {report.failed}, cost ${report.cost:.6f}")
    return 1 if report.failed else 0


def _questions(path: Path) -> list[Any]:
    from ..warming import read_questions

    try:
        return read_questions(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"rag-cache warm: {exc}") from exc


def _dry_run(tasks: list[Any], args: argparse.Namespace) -> int:
    if args.json:
        _print([{"question": t.question, "kind": t.kind, "score": t.score, "key": t.key,
                 "namespace": t.namespace, "est_tokens": t.est_tokens, "est_cost": t.est_cost}
                for t in tasks])
    else:
        _table(f"rag-cache warm: {len(tasks)} task(s) (dry run)",
               ["question", "kind", "score", "est. tokens", "est. cost"],
               [[t.question[:60], t.kind, f"{t.score:.3g}", f"{t.est_tokens:,.0f}",
                 f"${t.est_cost:.6f}"] for t in tasks])
    return 0


def _history(warmer: Any, args: argparse.Namespace) -> int:
    runs = warmer.get_run_history(args.history)
    stats = warmer.get_warming_stats()
    if args.json:
        _print({"runs": [r.to_dict() for r in runs], "stats": stats.to_dict()})
        return 0
    _table("rag-cache warm: history", ["run", "started", "source", "status", "warmed",
                                       "skipped", "failed", "cost"],
           [[r.run_id, _when(r.started), r.source, r.status, str(r.warmed), str(r.skipped),
             str(r.failed), f"${r.cost:.6f}"] for r in runs])
    roi = "-" if stats.roi is None else f"{stats.roi:.2f}"
    print(f"{stats.runs} run(s): warmed {stats.warmed}, cost ${stats.cost:.6f}; hits on "
          f"warmed entries {stats.hits}, saved ${stats.saved_cost:.6f}, ROI {roi}")
    return 0
