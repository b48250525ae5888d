"""One place that turns a ``RedisConfig`` into redis-py clients.

Standalone servers, Redis Cluster and Sentinel-managed primaries, sync and asyncio,
with the configuration's ACL user/password and TLS settings.  The L3 tier and
``redis_ops`` both connect through here, so whatever one honours the other does too.

Failure policy: redis-py never retries or sleeps on our behalf (the tier retries
itself, inside its own deadline).  One redis-py habit is changed for cluster
clients: a ``CLUSTERDOWN`` reply (a cluster between losing a primary and promoting
its replica) raises :class:`ClusterUnavailable` rather than ``ClusterDownError``,
because redis-py answers the latter by sleeping 250 ms and, in asyncio, closing the
whole client: longer than a cache call may take, and a reconnect storm under load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.sentinel
from redis._parsers import (
    _AsyncHiredisParser,
    _AsyncRESP2Parser,
    _AsyncRESP3Parser,
    _HiredisParser,
    _RESP2Parser,
    _RESP3Parser,
)
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import ResponseError
from redis.retry import Retry

from ._config import RedisConfig

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack
except ImportError:  # redis-py works without it
    _pack = None

__all__ = [
    "AsyncClient",
    "ClusterUnavailable",
    "Mode",
    "SyncClient",
    "async_client",
    "connection_kwargs",
    "detect_mode",
    "node_client",
    "sentinel_addresses",
    "sentinel_manager",
    "sync_client",
    "uses_tls",
]

Mode = Literal["standalone", "cluster", "sentinel"]
SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

_SSL_FIELDS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


class ClusterUnavailable(ResponseError):
    """The cluster answered ``CLUSTERDOWN``: it is failing over or has lost slots."""


def _fail_fast(base: type[Any]) -> type[Any]:
    classes = {**base.EXCEPTION_CLASSES, "CLUSTERDOWN": ClusterUnavailable}
    return type(f"FailFast{base.__name__}", (base,),
                {"EXCEPTION_CLASSES": classes, "__module__": __name__})


_SYNC_PARSERS: dict[type[Any], type[Any]] = {
    p: _fail_fast(p) for p in (_RESP2Parser, _RESP3Parser, _HiredisParser)}
_ASYNC_PARSERS: dict[type[Any], type[Any]] = {
    p: _fail_fast(p) for p in (_AsyncRESP2Parser, _AsyncRESP3Parser, _AsyncHiredisParser)}


# redis-py picks (and, after HELLO, replaces) the parser class itself; these
# connections swap in the fail-fast subclass of whatever it picks.
class _FailFastConnection(redis.connection.Connection):
    """A cluster node connection whose replies raise ``ClusterUnavailable``."""

    def set_parser(self, parser_class: type[Any]) -> None:
        super().set_parser(_SYNC_PARSERS.get(parser_class, parser_class))  # type: ignore[no-untyped-call]


class _FailFastSSLConnection(redis.connection.SSLConnection):
    def set_parser(self, parser_class: type[Any]) -> None:
        super().set_parser(_SYNC_PARSERS.get(parser_class, parser_class))  # type: ignore[no-untyped-call]


def _hiredis_pack(args: tuple[Any, ...]) -> list[bytes] | None:
    """The command packed by hiredis' C packer, as redis-py's sync client does (its
    asyncio client packs in Python, a large share of a 100-key MGET's cost)."""
    if _pack is None or not isinstance(args[0], str) or not all(
            type(a) in (str, bytes, int) for a in args):
        return None
    head = tuple(args[0].encode().split())  # "CLUSTER SLOTS" is two arguments
    return [_pack(head + args[1:])]


class _AsyncFailFastConnection(redis.asyncio.connection.Connection):
    def set_parser(self, parser_class: type[Any]) -> None:
        super().set_parser(_ASYNC_PARSERS.get(parser_class, parser_class))

    def pack_command(self, *args: Any) -> list[bytes]:
        return _hiredis_pack(args) or super().pack_command(*args)


class _AsyncFailFastSSLConnection(redis.asyncio.connection.SSLConnection):
    def set_parser(self, parser_class: type[Any]) -> None:
        super().set_parser(_ASYNC_PARSERS.get(parser_class, parser_class))

    def pack_command(self, *args: Any) -> list[bytes]:
        return _hiredis_pack(args) or super().pack_command(*args)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def uses_tls(config: RedisConfig) -> bool:
    """TLS is on for a ``rediss://`` URL or when any ``ssl_*`` file is configured."""
    return config.url.startswith("rediss://") or any(getattr(config, f) for f in _SSL_FIELDS)


def _url(config: RedisConfig) -> str:
    # Certificates without the rediss:// scheme would make redis-py reject the ssl_*
    # arguments; configuring them means TLS.
    if uses_tls(config) and config.url.startswith("redis://"):
        return "rediss://" + config.url[len("redis://"):]
    return config.url


def connection_kwargs(config: RedisConfig, *, timeout: float | None = None) -> dict[str, Any]:
    """Socket timeouts, credentials and TLS files for one connection."""
    c = config
    kw: dict[str, Any] = {
        "socket_timeout": c.timeout if timeout is None else timeout,
        "socket_connect_timeout": c.connect_timeout if timeout is None else timeout,
    }
    if c.username:
        kw["username"] = c.username
    if c.password is not None:
        kw["password"] = c.password.get_secret_value()
    for opt in _SSL_FIELDS:
        if getattr(c, opt):
            kw[opt] = getattr(c, opt)
    return kw


def sentinel_addresses(config: RedisConfig) -> list[tuple[str, int]]:
    """``host:port`` strings (``[::1]:26379`` for IPv6) as (host, port) pairs."""
    out = []
    for item in config.sentinels:
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    return out


def _sentinel_data_kwargs(config: RedisConfig) -> dict[str, Any]:
    """What the URL says besides the address (db, user, password), plus ours."""
    kw = {k: v for k, v in parse_url(_url(config)).items()  # type: ignore[no-untyped-call]
          if k not in ("host", "port", "connection_class", "path")}
    kw.update(connection_kwargs(config))
    if uses_tls(config):
        kw["ssl"] = True
    return kw


def _sentinel_kwargs(config: RedisConfig) -> dict[str, Any]:
    # Sentinels get the timeouts and TLS settings of the data nodes, not their
    # credentials (a sentinel's own password is a separate secret).
    kw: dict[str, Any] = {
        "socket_timeout": config.timeout,
        "socket_connect_timeout": config.connect_timeout,
        "retry": _no_retry(),
    }
    if uses_tls(config):
        kw["ssl"] = True
        kw.update({f: getattr(config, f) for f in _SSL_FIELDS if getattr(config, f)})
    return kw


def sentinel_manager(config: RedisConfig) -> redis.sentinel.Sentinel:
    """A sync ``Sentinel`` over the configured sentinels."""
    return redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(config), sentinel_kwargs=_sentinel_kwargs(config),
        **_sentinel_data_kwargs(config))


def detect_mode(config: RedisConfig) -> Mode:
    """Sentinel when sentinels are configured, else what the server's INFO says."""
    if config.sentinels:
        return "sentinel"
    if config.cluster is not None:
        return "cluster" if config.cluster else "standalone"
    probe = redis.Redis.from_url(_url(config), retry=_no_retry(), **connection_kwargs(config))
    try:
        return "cluster" if probe.info("cluster").get("cluster_enabled") else "standalone"
    finally:
        probe.close()


def sync_client(config: RedisConfig, mode: Mode) -> SyncClient:
    """The data client: no redis-py retries, partial slot coverage tolerated."""
    kw = connection_kwargs(config)
    if mode == "cluster":
        # A redis:// URL, so that our connection class is not replaced by the one a
        # rediss:// URL implies; TLS comes with the class.
        url = _url(config)
        tls = url.startswith("rediss://")
        return redis.cluster.RedisCluster.from_url(
            "redis://" + url[len("rediss://"):] if tls else url,
            require_full_coverage=False, retry=_no_retry(),
            max_connections=config.max_connections,
            connection_class=_FailFastSSLConnection if tls else _FailFastConnection, **kw)
    if mode == "sentinel":
        client: redis.Redis = sentinel_manager(config).master_for(  # type: ignore[no-untyped-call]
            config.sentinel_service, retry=_no_retry(), max_connections=config.max_connections)
        return client
    return redis.Redis.from_url(_url(config), retry=_no_retry(),
                                max_connections=config.max_connections, **kw)


def async_client(config: RedisConfig, mode: Mode) -> AsyncClient:
    """The asyncio twin of :func:`sync_client` (one per event loop)."""
    kw = connection_kwargs(config)
    if mode == "cluster":
        client = redis.asyncio.cluster.RedisCluster.from_url(
            _url(config), require_full_coverage=False, retry=_no_retry(),
            max_connections=config.max_connections, **kw)
        # The asyncio cluster client takes no connection class; every node it
        # discovers is built from these connection arguments.
        tls = uses_tls(config)
        cls = _AsyncFailFastSSLConnection if tls else _AsyncFailFastConnection
        client.nodes_manager.connection_kwargs["connection_class"] = cls
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = cls
        return client
    if mode == "sentinel":
        manager = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            sentinel_addresses(config), sentinel_kwargs=_sentinel_kwargs(config),
            **_sentinel_data_kwargs(config))
        sclient: redis.asyncio.Redis = manager.master_for(
            config.sentinel_service, retry=_no_retry(), max_connections=config.max_connections)
        return sclient
    return redis.asyncio.Redis.from_url(_url(config), retry=_no_retry(),
                                        max_connections=config.max_connections, **kw)


def node_client(config: RedisConfig, host: str, port: int, *,
                timeout: float | None = None) -> redis.Redis:
    """An administrative client of one node (strings decoded, no retries), with the
    configuration's credentials and TLS."""
    kw = connection_kwargs(config, timeout=timeout)
    if uses_tls(config):
        kw["ssl"] = True
    return redis.Redis(host=host, port=port, retry=_no_retry(), decode_responses=True, **kw)
