"""``rag-cache demo``: a small RAG application (LlamaIndex retrieval, a LangChain chat
chain, a local simulated model) answering a workload of repeats, paraphrases and
look-alikes through the cache, then the figures analytics recorded."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

QUICK_QUESTIONS = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--questions", type=int, default=360, metavar="N",
                        help="questions in the workload (default 360)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run: {QUICK_QUESTIONS} questions")
    parser.add_argument("--redis-url", default=None, metavar="URL",
                        help="add an L3 Redis (standalone or cluster) at URL")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="start a local Redis Cluster for the run as L3, remove it after")
    parser.add_argument("--report", type=Path, default=Path(".rag-cache/demo-report.html"),
                        help="where to write the HTML report (default %(default)s)")
    parser.add_argument("--latency-scale", type=float, default=0.25, metavar="X",
                        help="simulated model latency as a fraction of a hosted model's "
                             "(default 0.25)")
    parser.add_argument("--semantic-setting", choices=("strict", "balanced"), default="strict",
                        help="the verifier's operating point (default strict: about 1%% "
                             "false hits on Quora pairs; balanced: about 5%%, more "
                             "paraphrases hit)")
    parser.add_argument("--seed", type=int, default=7, help="workload seed")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON (progress goes to stderr)")


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from contextlib import ExitStack

    from rich.console import Console

    if args.redis_url and args.redis_cluster:
        print("rag-cache demo: --redis-url and --redis-cluster exclude each other",
              file=sys.stderr)
        return 2
    if args.questions < 1:
        print("rag-cache demo: --questions must be at least 1", file=sys.stderr)
        return 2
    if args.latency_scale < 0:
        print("rag-cache demo: --latency-scale must be >= 0", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    console = Console(stderr=args.json)
    with ExitStack() as stack:
        console.print("[dim]Starting: importing LangChain, LlamaIndex and PyTorch...[/]")
        import torch

        # One-sentence embeddings gain nothing from threads; on a busy machine their
        # synchronisation costs several times the work.
        torch.set_num_threads(1)
        from rag_cache_plugin._demo.render import render
        from rag_cache_plugin._demo.run import DemoOptions, run_demo
        from rag_cache_plugin._demo.summary import summarize

        url, label = args.redis_url, ""
        if args.redis_cluster:
            from rag_cache_plugin._localredis import LocalCluster

            with console.status("Starting a local Redis Cluster (3 primaries, 3 replicas)"):
                cluster = stack.enter_context(LocalCluster(3, 1))
            url, label = cluster.url, "local cluster, removed after the run"
        options = DemoOptions(questions=QUICK_QUESTIONS if args.quick else args.questions,
                              latency_scale=args.latency_scale, seed=args.seed,
                              semantic_setting=args.semantic_setting,
                              redis_url=url, redis_label=label, report=args.report)
        result = run_demo(options, console)
        summary = summarize(result)
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=str)
        print()
    else:
        render(result, summary, console)
    return 0 if summary["consistent"] else 1
