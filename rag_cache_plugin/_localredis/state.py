"""A local cluster that outlives this process (``rag-cache redis local-cluster``):
started, recorded in its base dir, inspected and taken down from there."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import redis

from ._commands import _admin, _cluster_info
from ._process import _POLL, LocalRedisError, _pid_alive
from .cluster import LocalCluster
from .standalone import LocalRedis

__all__ = ["local_cluster_down", "local_cluster_status", "local_cluster_up"]

_STATE_FILE = "local-cluster.json"

# Popen objects of servers left running by ``local_cluster_up``: kept so that Python
# neither warns about them nor reaps them behind ``local_cluster_down``'s back.
_detached: list[LocalRedis] = []


def _read_state(base_dir: Path) -> dict[str, Any] | None:
    path = base_dir / _STATE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def _is_node_process(pid: int, port: int) -> bool:
    """Is ``pid`` still the redis-server we started on ``port``, not a reused pid?"""
    if not _pid_alive(pid):
        return False
    try:
        # Redis sets its title to "redis-server 127.0.0.1:PORT [cluster]".
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return Path("/proc").is_dir() is False
    return b"redis" in cmdline and str(port).encode() in cmdline


def local_cluster_up(
    primaries: int = 3,
    replicas: int = 1,
    base_dir: str | os.PathLike[str] = ".rag-cache/local-cluster",
    *,
    node_timeout_ms: int = 2000,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Start a cluster that outlives this process; record it in ``base_dir``.

    Returns the recorded info (``url``, ``startup_nodes``, ``nodes`` with ports and pids).
    """
    root = Path(base_dir).resolve()
    status = local_cluster_status(root)
    if any(n["alive"] for n in status["nodes"]):
        raise LocalRedisError(
            f"a local cluster recorded in {root} is still running ({status['url']}); "
            "take it down first"
        )
    local_cluster_down(root)  # clears what a dead one left behind
    cluster = LocalCluster(
        primaries, replicas, node_timeout_ms=node_timeout_ms, base_dir=root,
        die_with_parent=False, start_timeout=timeout,
    ).start()  # fmt: skip
    _detached.extend(n.server for n in cluster.nodes)
    info = {
        **cluster.describe(),
        "base_dir": str(root),
        "started_at": time.time(),
        "startup_seconds": cluster.startup_seconds,
    }
    # Written whole, then renamed: a concurrent ``status`` never reads half a file.
    tmp = root / (_STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, root / _STATE_FILE)
    return info


def local_cluster_status(base_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``base_dir`` records and how its nodes are doing now.

    ``state`` is ``"absent"`` (nothing recorded), ``"down"`` (no node answers) or the
    ``cluster_state`` a live node reports (``"ok"``, ``"fail"``).
    """
    root = Path(base_dir).resolve()
    info = _read_state(root)
    if info is None:
        return {"base_dir": str(root), "state": "absent", "running": False, "url": None,
                "nodes": []}  # fmt: skip
    state = "down"
    nodes = []
    for recorded in info["nodes"]:
        node = dict(recorded)
        node["alive"] = _is_node_process(node["pid"], node["port"])
        node["answering"] = False
        if node["alive"]:
            with contextlib.closing(_admin(node["host"], node["port"])) as client:
                try:
                    replication = client.info("replication")
                    cluster_state = _cluster_info(client).get("cluster_state", "fail")
                except (redis.RedisError, OSError):
                    pass
                else:
                    node["answering"] = True
                    node["role"] = "replica" if replication["role"] == "slave" else "primary"
                    state = cluster_state if state in ("down", "ok") else state
        nodes.append(node)
    return {
        **info,
        "state": state,
        "running": bool(nodes) and all(n["alive"] for n in nodes),
        "nodes": nodes,
    }


def local_cluster_down(base_dir: str | os.PathLike[str], timeout: float = 10.0) -> dict[str, Any]:
    """Stop the cluster recorded in ``base_dir`` and remove its node dirs and record."""
    root = Path(base_dir).resolve()
    info = _read_state(root)
    if info is None:
        return {"base_dir": str(root), "stopped": []}
    ours = [n for n in info["nodes"] if _is_node_process(n["pid"], n["port"])]
    for node in ours:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(n["pid"]) for n in ours) and time.monotonic() < deadline:
        time.sleep(_POLL)
    for node in ours:
        if _pid_alive(node["pid"]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node["pid"], signal.SIGKILL)
    for node in info["nodes"]:
        shutil.rmtree(node["dir"], ignore_errors=True)
    (root / _STATE_FILE).unlink(missing_ok=True)
    pids = {n["pid"] for n in info["nodes"]}
    for server in [s for s in _detached if s.pid in pids]:
        server._forget()  # our own child when ``up`` ran in this process: reap it
        _detached.remove(server)
    return {"base_dir": str(root), "stopped": [n["pid"] for n in ours]}
