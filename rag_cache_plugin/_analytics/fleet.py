"""Counters shared through Redis so one report covers every host.

Each process keeps one hash, ``<prefix>:{analytics}:proc:<id>``, holding its
cumulative snapshot, with a TTL a few intervals long (a dead process drops out),
and an index sorted set ``<prefix>:{analytics}:procs`` scored by expiry.  The
``{analytics}`` hash tag puts both in one cluster slot, so one Lua script writes
them atomically (no set-then-expire window) on standalone and cluster alike.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .metrics import MetricSnapshot

__all__ = ["fleet_keys", "publish", "publish_if_up", "read_fleet"]

_log = logging.getLogger("rag_cache_plugin.analytics")

_PUBLISH = """
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'host', ARGV[2], 'pid', ARGV[3], 'ts', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""


def fleet_keys(prefix: str, proc: str) -> tuple[str, str]:
    """(this process's hash, the index of live processes)."""
    return f"{prefix}:{{analytics}}:proc:{proc}", f"{prefix}:{{analytics}}:procs"


def publish(client: Any, prefix: str, snap: MetricSnapshot, ttl: float) -> None:
    """Write ``snap`` (cumulative since the process started) for ``ttl`` seconds."""
    proc_key, index = fleet_keys(prefix, snap.proc)
    now = time.time()
    data = json.dumps(snap.to_dict(), separators=(",", ":"), allow_nan=False)
    # A redis-py Script runs the fixed Lua text server-side by its SHA (EVALSHA).
    client.register_script(_PUBLISH)(
        keys=[proc_key, index],
        args=[data, snap.host, str(snap.pid), repr(now), str(int(ttl * 1000)), repr(now + ttl),
              snap.proc])


def publish_if_up(l3: Any, breaker: Any, snap: MetricSnapshot, ttl: float) -> bool:
    """Publish through the cache's L3 tier unless its circuit is open; False when
    publishing failed (the cache's own calls decide the breaker, not these)."""
    if breaker is not None and breaker.state != "closed":
        return True
    try:
        publish(l3.client, l3.config.prefix, snap, ttl)
    except Exception as exc:
        _log.debug("rag-cache analytics: publishing to Redis failed: %s", exc)
        return False
    return True


def read_fleet(client: Any, prefix: str) -> list[MetricSnapshot]:
    """The live processes' cumulative snapshots (one per process)."""
    _, index = fleet_keys(prefix, "")
    members = client.zrangebyscore(index, time.time(), "+inf")
    out: list[MetricSnapshot] = []
    for m in members:
        proc = m.decode() if isinstance(m, bytes) else str(m)
        raw = client.hget(fleet_keys(prefix, proc)[0], "data")
        if raw:
            out.append(MetricSnapshot.from_dict(json.loads(raw)))
    return out
