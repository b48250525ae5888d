"""L3 reads of one partition sent straight to the node that serves its slot (a base of
``RedisTier``), and ``_raw``, a command without redis-py's per-call machinery."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio.cluster
import redis.cluster
from redis.crc import key_slot
from redis.exceptions import AskError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import SentinelConnectionPool

from . import Ref
from ._redis_calls import _ERRORS, _RedisCalls

# A direct call to the node the client's slot map names failed in a way the cluster
# client knows how to follow (a redirect, a dead or restarted node): let it.
_FOLLOW = (AskError, TryAgainError, RedisConnectionError)


# Connections _raw keeps checked out of a pool between calls, so a read skips the
# pool's bookkeeping (redis-py 8 records metrics on every checkout and return).  They
# hang on the pool itself, so they go when it goes; a forked child never uses its
# parent's (they carry the pid).
_ATTR = "_rag_cache_spares"
_SPARES_MAX = 8  # per pool; more concurrent readers check connections out as usual
_PID = os.getpid()


def _forked() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _spares(pool: Any) -> list[Any] | None:
    """The pool's kept connections; None for a Sentinel pool, which drops connections
    to a demoted primary as they come back to it, so they must come back every call."""
    kept = pool.__dict__.get(_ATTR)
    if kept is not None and kept[0] == _PID:
        return kept[1]  # type: ignore[no-any-return]
    if isinstance(pool, SentinelConnectionPool):
        return None
    spares: list[Any] = []
    pool.__dict__[_ATTR] = (_PID, spares)
    return spares


def _raw(client: redis.Redis, *args: Any) -> Any:
    """One command without redis-py's per-call machinery (retry wrapper, response
    callbacks, event dispatch, metrics, pool checkout): about a third of a GET's
    client time.  Only for GET and MGET, whose raw replies are what we want; the tier
    does its own retries."""
    pool = client.connection_pool
    spares = _spares(pool)
    conn: Any = None
    if spares:
        with contextlib.suppress(IndexError):  # another thread may take the last one
            conn = spares.pop()
    if conn is None:
        conn = pool.get_connection()
    kept = spares is not None
    try:
        conn.send_command(*args)
        return conn.read_response()
    except ResponseError:
        raise  # an error reply was read whole: the connection is fine
    except BaseException:
        kept = False
        conn.disconnect()  # no half-read reply may linger
        raise
    finally:
        if kept and spares is not None and len(spares) < _SPARES_MAX:
            spares.append(conn)
        else:
            pool.release(conn)


class _DirectReads(_RedisCalls):
    """GET and MGET operations for ``_call``/``_acall`` (a base of ``RedisTier``)."""

    # Reads of one partition go straight to the node that serves its slot: the
    # partition is the hash tag of every key in it, so there is one slot to look up
    # and no per-key routing, policy resolution or pipeline in the cluster client.
    # The cluster client takes over whenever the map turns out to be stale.

    @staticmethod
    def _node(c: redis.cluster.RedisCluster, partition: str) -> redis.Redis | None:
        try:
            node = c.nodes_manager.get_node_from_slot(key_slot(partition.encode()))
            conn: redis.Redis = c.get_redis_connection(node)
            return conn
        except _ERRORS:
            return None

    def _get_op(self, name: str, partition: str) -> Callable[[Any], Any]:
        if self._mode is None:
            return lambda c: c.get(name)
        if self._mode != "cluster":
            return lambda c: _raw(c, "GET", name)

        def op(c: Any) -> Any:
            node = self._node(c, partition)
            if node is not None:
                try:
                    return _raw(node, "GET", name)
                except _FOLLOW:
                    pass
            return c.get(name)
        return op

    @staticmethod
    def _mget_any(c: Any, names: Sequence[str | bytes]) -> Any:
        # The server kind is not known before the first call: decide by the client.
        if isinstance(c, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster):
            return c.mget_nonatomic(names)
        return c.mget(names)

    def _mget_op(self, names: list[str], refs: Sequence[Ref]) -> Callable[[Any], Any]:
        if self._mode is None:
            return lambda c: self._mget_any(c, names)
        if self._mode != "cluster":
            return lambda c: _raw(c, "MGET", *names)
        partition = refs[0].partition
        if any(r.partition != partition for r in refs):
            # Several slots: the cluster client splits the names and pipelines.
            return lambda c: c.mget_nonatomic(names)

        def op(c: Any) -> Any:
            node = self._node(c, partition)
            if node is not None:
                try:
                    return _raw(node, "MGET", *names)
                except _FOLLOW:
                    pass
            return c.mget_nonatomic(names)
        return op

    @staticmethod
    async def _anode_call(c: Any, partition: str,
                          *args: Any) -> Any:
        try:
            node = c.nodes_manager.get_node_from_slot(key_slot(partition.encode()))
        except _ERRORS:
            node = None
        if node is not None:
            try:
                return await node.execute_command(*args)
            except _FOLLOW:
                pass
        if args[0] == "GET":
            return await c.get(args[1])
        return await c.mget_nonatomic(list(args[1:]))
