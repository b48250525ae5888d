"""``rag-cache redis``: local development clusters, configuration profiles, health,
and the cache's least-privilege ACL user."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_cache_plugin._config import RedisConfig
    from rag_cache_plugin._redis_ops.health import HealthReport

DEFAULT_DIR = ".rag-cache/local-cluster"


def _connection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (else RAG_CACHE_REDIS_* variables, else the "
                             "local cluster)")
    g.add_argument("--url", help="redis:// or rediss:// URL of any node")
    g.add_argument("--sentinel", action="append", default=[], metavar="HOST:PORT",
                   help="a Sentinel (repeat); the primary is looked up as --service")
    g.add_argument("--service", default=None, help="Sentinel service name (mymaster)")
    g.add_argument("--dir", default=DEFAULT_DIR, help="local cluster directory")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="redis_command", required=True, metavar="ACTION")

    lc = sub.add_parser("local-cluster", help="a cluster of redis-server processes on "
                        "loopback, for development")
    lc.add_argument("action", choices=["up", "down", "status"])
    lc.add_argument("--primaries", type=int, default=3)
    lc.add_argument("--replicas", type=int, default=1, help="replicas per primary")
    lc.add_argument("--dir", default=DEFAULT_DIR)
    lc.add_argument("--json", action="store_true")

    pr = sub.add_parser("profile", help="configuration profiles for a cache Redis")
    pr.add_argument("action", choices=["show", "apply", "list"])
    pr.add_argument("name", nargs="?", default="cache-lfu")
    pr.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                    help="add or override a setting (e.g. maxmemory=2gb)")
    pr.add_argument("--dry-run", action="store_true", help="report, change nothing")
    pr.add_argument("--json", action="store_true")
    _connection(pr)

    he = sub.add_parser("health", help="topology, per-node status and recommendations")
    he.add_argument("--json", action="store_true")
    _connection(he)

    acl = sub.add_parser("acl", help="the least-privilege ACL rule of the cache user")
    acl.add_argument("--user", default="ragcache")
    acl.add_argument("--password", default=None,
                     help="the user's password (default: generated and printed)")
    acl.add_argument("--apply", action="store_true", help="ACL SETUSER on every node")
    _connection(acl)


def _config(args: argparse.Namespace) -> RedisConfig:
    from rag_cache_plugin._config import RedisConfig
    from rag_cache_plugin._localredis import local_cluster_status

    overrides: dict[str, Any] = {}
    if args.url:
        overrides["url"] = args.url
    if args.sentinel:
        overrides["sentinels"] = args.sentinel
    if args.service:
        overrides["sentinel_service"] = args.service
    env = os.environ
    if "url" not in overrides and not env.get("RAG_CACHE_REDIS_URL") and not args.sentinel:
        status = local_cluster_status(args.dir)
        if status.get("url"):
            overrides["url"] = status["url"]
    return RedisConfig._from_env(env, "RAG_CACHE_REDIS_", overrides)


def _settings(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set needs SETTING=VALUE, not {item!r}")
        out[key.strip()] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    try:
        return int(_ACTIONS[args.redis_command](args))
    except Exception as exc:  # a clear line, not a traceback, for operational errors
        from redis.exceptions import RedisError

        from rag_cache_plugin._errors import RagCacheError

        if isinstance(exc, RedisError | RagCacheError | OSError | ValueError):
            print(f"rag-cache redis: {exc}", file=sys.stderr)
            return 2
        raise


def _local_cluster(args: argparse.Namespace) -> int:
    from rag_cache_plugin import _localredis as lr

    if args.action == "up":
        info = lr.local_cluster_up(args.primaries, args.replicas, args.dir)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"cluster up: {info['url']}  ({args.primaries} primaries, "
                  f"{args.replicas} replica(s) each; {info['startup_seconds']:.1f}s)")
            print(f"  export RAG_CACHE_REDIS_URL={info['url']}")
        return 0
    if args.action == "down":
        done = lr.local_cluster_down(args.dir)
        print(json.dumps(done) if args.json else f"stopped {len(done['stopped'])} node(s)")
        return 0
    status = lr.local_cluster_status(args.dir)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"{status['state']}  {status.get('url') or ''}")
        for n in status["nodes"]:
            print(f"  {n['host']}:{n['port']}  {n.get('role', '?'):8} pid {n['pid']}  "
                  f"{'alive' if n['alive'] else 'dead'}")
    return 0 if status["state"] in ("ok", "absent") else 1


def _profile(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rag_cache_plugin.redis_ops import PROFILES, RedisClusterManager

    if args.action == "list":
        for p in PROFILES.values():
            print(f"{p.name:18} {p.description}")
        return 0
    overrides = _settings(args.set)
    if args.action == "show":
        sys.stdout.write(RedisClusterManager.render_profile(args.name, overrides))
        return 0
    manager = RedisClusterManager(_config(args))
    report = manager.apply_config(args.name, overrides=overrides, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"profile": report.profile, "mode": report.mode, "ok": report.ok,
                          "dry_run": report.dry_run,
                          "nodes": [asdict(n) | {"verified": n.verified}
                                    for n in report.nodes]}, indent=2))
    else:
        verb = "would change" if args.dry_run else "changed"
        for n in report.nodes:
            state = "unreachable: " + n.error if n.error else (
                "verified" if n.verified else "NOT verified")
            print(f"{n.address} ({n.role}): {verb} {len(n.applied)}, already "
                  f"{len(n.unchanged)}; {state}")
            for key, (now, want) in n.restart_required.items():
                print(f"    needs a restart: {key} {now!r} -> {want!r}")
            for key, err in n.failed.items():
                print(f"    failed: {key}: {err}")
            for key, (got, want) in n.mismatched.items():
                print(f"    reads back {key} {got!r}, wanted {want!r}")
    return 0 if report.ok else 1


def _health(args: argparse.Namespace) -> int:
    from rag_cache_plugin.redis_ops import RedisClusterManager

    report = RedisClusterManager(_config(args)).monitor_cluster()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_health(report)
    return {"ok": 0, "degraded": 1}.get(report.status, 2)


def _mb(n: int) -> str:
    return f"{n / 1048576:.1f}M"


def _print_health(report: HealthReport) -> None:
    from rich.console import Console
    from rich.table import Table

    # Not a terminal (a pipe, a log): wide enough that no column is cut.
    console = Console(width=None if sys.stdout.isatty() else 200)
    colour = {"ok": "green", "degraded": "yellow", "down": "red", "warning": "yellow",
              "critical": "red"}
    hr = "-" if report.hit_ratio is None else f"{report.hit_ratio:.1%}"
    console.print(f"[bold]{report.mode}[/] [{colour[report.status]}]{report.status}[/]  "
                  f"slots {report.slots_covered}/16384  hit ratio {hr}  "
                  f"ops/s {report.ops_per_sec:.0f}  evicted {report.evicted_keys}")
    table = Table()
    for col in ("node", "role", "status", "memory", "max", "policy", "frag", "ops/s",
                "hit ratio", "evicted", "clients", "ping ms", "link / lag"):
        table.add_column(col)
    for n in report.nodes:
        if n.role == "sentinel":  # no data of its own
            table.add_row(n.address, n.role, f"[{colour.get(n.status, 'white')}]{n.status}[/]",
                          *[""] * 8, "-" if n.latency_ms is None else f"{n.latency_ms:.2f}", "")
            continue
        lag = ""
        if n.role == "replica":
            lag = f"{n.link} / {n.lag_bytes if n.lag_bytes is not None else '?'}B"
        table.add_row(
            n.address, n.role, f"[{colour.get(n.status, 'white')}]{n.status}[/]",
            _mb(n.used_memory), _mb(n.maxmemory) if n.maxmemory else "-",
            n.maxmemory_policy, f"{n.fragmentation:.2f}", f"{n.ops_per_sec:.0f}",
            "-" if n.hit_ratio is None else f"{n.hit_ratio:.1%}", str(n.evicted_keys),
            str(n.clients), "-" if n.latency_ms is None else f"{n.latency_ms:.2f}", lag)
    console.print(table)
    for p in report.problems:
        console.print(f"[red]problem[/] {p}")
    if report.promoted:
        console.print(f"promoted: {', '.join(report.promoted)}")
    for r in report.recommendations:
        console.print(f"[yellow]{r.severity}[/] {r.message}"
                      + (f"  ({', '.join(r.nodes)})" if r.nodes else ""))


def _acl(args: argparse.Namespace) -> int:
    from rag_cache_plugin.redis_ops import RedisClusterManager

    manager = RedisClusterManager(_config(args))
    if not args.apply:
        rule, pw = manager.acl_rule(args.user, args.password)
        print(f"ACL SETUSER {args.user} {rule}")
        print(f"# ACL file line:\nuser {args.user} {rule}")
        if args.password is None:
            print(f"# generated password: {pw}", file=sys.stderr)
        return 0
    result, pw = manager.apply_acl(args.user, args.password)
    for address, state in result.nodes.items():
        saved = " (saved to the ACL file)" if address in result.saved else ""
        print(f"{address}: {state}{saved}")
    if args.password is None:
        print(f"# password of {args.user}: {pw}", file=sys.stderr)
    print(f"# RAG_CACHE_REDIS_USERNAME={args.user} RAG_CACHE_REDIS_PASSWORD=<password>",
          file=sys.stderr)
    return 0 if result.ok else 1


_ACTIONS = {"local-cluster": _local_cluster, "profile": _profile, "health": _health,
            "acl": _acl}
