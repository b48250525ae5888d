"""L3's clients and every call's deadline and retries (the base of ``RedisTier``).

Failure policy: every call has one overall deadline (``RedisConfig.timeout``).
redis-py itself never retries; the tier retries an attempt that failed *fast*
(connection refused or reset, ``CLUSTERDOWN``, a slot the client's map lacks) while
less than half the deadline is spent, at most twice, with no sleep.  That is what
rides through a failover: the failed attempt refreshed the cluster map or the
Sentinel's primary address, and the retry goes to the new primary.  A slow failure
(a hung server) is never retried, so a dead server costs about one deadline, after
which the core's circuit breaker stops calling.  Async calls are also cut at the
deadline by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio
import redis.asyncio.cluster
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MaxConnectionsError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._config import RedisConfig
from .._errors import TierError
from .._redisconn import (
    AsyncClient,
    ClusterUnavailable,
    Mode,
    SyncClient,
    async_client,
    detect_mode,
    sync_client,
)

T = TypeVar("T")

_ERRORS = (RedisError, RedisClusterException)
_RETRY_ON = (RedisConnectionError, RedisTimeoutError, ClusterUnavailable, ClusterDownError,
             SlotNotCoveredError, TryAgainError)
# Fast, but another attempt would fail the same way.
_NO_RETRY = (AuthenticationError, AuthorizationError, MaxConnectionsError)
_RETRIES = 2


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _RETRY_ON) and not isinstance(exc, _NO_RETRY)


class _RedisCalls:
    """Clients, created on first use, and ``_call``/``_acall`` (a base of ``RedisTier``)."""

    # Set by ``RedisTier.__init__``.
    config: RedisConfig
    _sync: SyncClient | None
    _mode: Mode | None
    _budget: float
    _async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient]
    _async_ready: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]

    # -- clients ------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """"standalone", "cluster" or "sentinel" (detected on first use)."""
        if self._mode is None:
            try:
                self._mode = detect_mode(self.config)
            except _ERRORS as exc:
                raise TierError(f"L3 unreachable: {exc}") from exc
        return self._mode

    @property
    def is_cluster(self) -> bool:
        return self.mode == "cluster"

    @property
    def client(self) -> SyncClient:
        """The sync client, created (and the server kind detected) on first use."""
        if self._sync is None:
            try:
                self._sync = sync_client(self.config, self.mode)
            except _ERRORS as exc:
                raise TierError(f"L3 unreachable: {exc}") from exc
        return self._sync

    async def aclient(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is not None:
            return client
        lock = self._async_ready.setdefault(loop, asyncio.Lock())
        async with lock:  # one client per loop, however many tasks ask at once
            client = self._async.get(loop)
            if client is None:
                if self._mode is None:
                    # Detection is one round trip; do it off the loop.
                    await asyncio.to_thread(lambda: self.mode)
                client = async_client(self.config, self.mode)
                if isinstance(client, redis.asyncio.cluster.RedisCluster):
                    # Reading the cluster map (and the command table) happens once,
                    # outside any call's deadline, bounded by the socket timeouts.
                    try:
                        await client.initialize()
                    except BaseException:
                        await client.aclose()
                        raise
                self._async[loop] = client
        return client

    def _call(self, op: Callable[[Any], T], what: str) -> T:
        """Run ``op`` with the retry policy of the module docstring."""
        started = time.monotonic()
        client = self.client
        attempt = 0
        while True:
            try:
                return op(client)
            except _ERRORS as exc:
                attempt += 1
                if (attempt > _RETRIES or not _retryable(exc)
                        or time.monotonic() - started >= self._budget / 2):
                    raise TierError(f"L3 {what}: {exc}") from exc

    async def _acall(self, op: Callable[[Any], Awaitable[T]], what: str) -> T:
        """Async ``_call``, also cut at the deadline."""
        try:
            client = await self.aclient()
        except _ERRORS as exc:
            raise TierError(f"L3 unreachable: {exc}") from exc
        started = time.monotonic()
        attempt = 0
        try:
            async with asyncio.timeout(self._budget):
                while True:
                    try:
                        return await op(client)
                    except _ERRORS as exc:
                        attempt += 1
                        if (attempt > _RETRIES or not _retryable(exc)
                                or time.monotonic() - started >= self._budget / 2):
                            raise TierError(f"L3 {what}: {exc}") from exc
        except TimeoutError as exc:
            raise TierError(f"L3 {what}: no answer within {self._budget}s") from exc
