"""Short administrative connections to our servers, and commands whose replies are
read raw (``CLUSTER INFO``, ``CLUSTER NODES``, ``SENTINEL ...``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def _admin(host: str, port: int, timeout: float = 1.0) -> redis.Redis:
    # No retries: a dead or paused node must cost one timeout, not a backoff series.
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


@dataclass(frozen=True)
class _Seen:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]


def _call(client: redis.Redis, *args: str) -> Any:
    """Send a command and return its reply unparsed: redis-py's reply parsers change
    shape between versions, and plain ``Redis`` lacks the cluster commands."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command(*args)  # type: ignore[no-untyped-call]
        return conn.read_response()
    finally:
        client.connection_pool.release(conn)


def _raw(client: redis.Redis, *args: str) -> str:
    reply = _call(client, *args)
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _fields(reply: Any) -> dict[str, str]:
    """A RESP2 flat ``[k, v, k, v]`` list or a RESP3 map, as a dict of strings."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    text = _raw(client, "CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _cluster_nodes(client: redis.Redis) -> dict[str, _Seen]:
    text = _raw(client, "CLUSTER", "NODES")
    seen: dict[str, _Seen] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        slots = []
        for token in parts[8:]:
            if token.startswith("["):
                continue  # a slot being migrated or imported
            first, _, last = token.partition("-")
            slots.append((int(first), int(last or first)))
        seen[parts[0]] = _Seen(
            node_id=parts[0],
            port=int(address.rpartition(":")[2] or 0),
            flags=frozenset(parts[2].split(",")),
            primary_id=None if parts[3] == "-" else parts[3],
            slots=tuple(slots),
        )
    return seen
