"""``rag-cache report``: the self-contained HTML dashboard from the analytics store."""

from __future__ import annotations

import argparse
from pathlib import Path

from .stats import add_store_arguments, open_store, parse_since


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, default=Path("rag-cache-report.html"),
                        help="HTML file to write (default: rag-cache-report.html)")
    parser.add_argument("--title", default="rag-cache report")


def run(args: argparse.Namespace) -> int:
    try:
        from .._analytics.report import write_report
    except ImportError as exc:  # matplotlib lives in the [report] extra
        raise SystemExit(f"rag-cache report needs matplotlib: pip install "
                         f"'rag-cache-plugin[report]' ({exc})") from exc
    store = open_store(args)
    try:
        since = parse_since(args.since)
        out = write_report(args.output, store.snapshots(since), store.alerts(since),
                           title=args.title)
    finally:
        store.close()
    print(f"wrote {out}")
    return 0
