"""L3: Redis standalone or Redis Cluster, shared by every process and host.

Keys carry the partition as a hash tag (``ragc:<ns>:{<partition>}:<key>``) so one
partition's entries share a slot.  Values are written with ``SET ... PX`` in one
command (never set-then-expire).  Every call runs with the tier's deadline as
socket timeout and without client-side retries, so a dead server costs one
deadline, after which the core's circuit breaker stops calling.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from .._codec import Codec
from .._config import RedisConfig
from .._entry import Entry
from .._errors import CodecError, TierError
from .._events import Corrupt, TierName
from .._keys import KeyMaker
from . import Emit, Ref

__all__ = ["RedisTier"]

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def _wrong_type(exc: ResponseError) -> bool:
    """GET on a key holding a list, hash, ...: a planted or foreign value."""
    return str(exc).startswith("WRONGTYPE")


class RedisTier:
    """The L3 tier; sync calls use redis-py, async calls ``redis.asyncio``."""

    name: TierName = "l3"

    def __init__(
        self,
        config: RedisConfig,
        *,
        codec: Codec,
        keys: KeyMaker,
        emit: Emit | None = None,
    ) -> None:
        self.config = config
        self._codec = codec
        self._keys = keys
        self._emit = emit
        self._ns_ids: dict[str, str] = {}
        self._sync: SyncClient | None = None
        self._cluster: bool | None = config.cluster
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    # -- naming -------------------------------------------------------------------

    def _ns(self, namespace: str) -> str:
        nsid = self._ns_ids.get(namespace)
        if nsid is None:
            nsid = self._ns_ids[namespace] = self._keys.namespace(namespace)
        return nsid

    def data_key(self, ref: Ref) -> str:
        return f"{self.config.prefix}:{self._ns(ref.namespace)}:{{{ref.partition}}}:{ref.key}"

    def tag_key(self, namespace: str, tag: str) -> str:
        return f"{self.config.prefix}:{self._ns(namespace)}:t:{{{self._keys.tag(namespace, tag)}}}"

    def news_key(self, namespace: str) -> str:
        return f"{self.config.prefix}:{self._ns(namespace)}:news"

    def _pattern(self, namespace: str | None) -> str:
        if namespace is None:
            return f"{self.config.prefix}:*"
        return f"{self.config.prefix}:{self._ns(namespace)}:*"

    @staticmethod
    def _ref_of(name: bytes | str, namespace: str) -> Ref | None:
        text = name.decode() if isinstance(name, bytes) else name
        head, sep, key = text.rpartition("}:")
        if not sep or "{" not in head:
            return None
        return Ref(key, namespace, head.rsplit("{", 1)[1])

    # -- clients ------------------------------------------------------------------

    def _kwargs(self) -> dict[str, Any]:
        c = self.config
        kw: dict[str, Any] = {
            "socket_timeout": c.timeout,
            "socket_connect_timeout": c.connect_timeout,
            "max_connections": c.max_connections,
        }
        if c.username:
            kw["username"] = c.username
        if c.password is not None:
            kw["password"] = c.password.get_secret_value()
        for opt in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if getattr(c, opt):
                kw[opt] = getattr(c, opt)
        return kw

    def _detect_cluster(self) -> bool:
        probe = redis.Redis.from_url(self.config.url, retry=Retry(NoBackoff(), 0), **self._kwargs())
        try:
            return bool(probe.info("cluster").get("cluster_enabled"))
        finally:
            probe.close()

    @property
    def is_cluster(self) -> bool:
        if self._cluster is None:
            self._cluster = self._detect_cluster()
        return self._cluster

    @property
    def client(self) -> SyncClient:
        """The sync client, created (and the server kind detected) on first use."""
        if self._sync is None:
            try:
                if self.is_cluster:
                    self._sync = redis.cluster.RedisCluster.from_url(
                        self.config.url, require_full_coverage=False,
                        retry=Retry(NoBackoff(), 1), **self._kwargs())
                else:
                    self._sync = redis.Redis.from_url(
                        self.config.url, retry=Retry(NoBackoff(), 0), **self._kwargs())
            except RedisError as exc:
                raise TierError(f"L3 unreachable: {exc}") from exc
        return self._sync

    async def aclient(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            if self._cluster is None:
                # Detection is one round trip; do it off the loop.
                self._cluster = await asyncio.to_thread(self._detect_cluster)
            if self._cluster:
                client = redis.asyncio.cluster.RedisCluster.from_url(
                    self.config.url, require_full_coverage=False,
                    retry=Retry(NoBackoff(), 1), **self._kwargs())
            else:
                client = redis.asyncio.Redis.from_url(
                    self.config.url, retry=Retry(NoBackoff(), 0), **self._kwargs())
            self._async[loop] = client
        return client

    # -- reads --------------------------------------------------------------------

    def _decode(self, ref: Ref, raw: bytes | None, now: float) -> Entry | None:
        if raw is None:
            return None
        try:
            entry = self._codec.decode(raw, ref.key)
        except CodecError as exc:
            self._report_corrupt(ref, str(exc))
            try:
                self.client.delete(self.data_key(ref))
            except RedisError:
                pass
            return None
        if entry.expires is not None and entry.expires <= now:
            return None  # clock skew between hosts: Redis has not expired it yet
        return entry

    def _report_corrupt(self, ref: Ref, reason: str) -> None:
        if self._emit is not None:
            self._emit(Corrupt(ref.namespace, ref.key, "l3", reason))

    def get(self, ref: Ref, now: float) -> Entry | None:
        try:
            raw = self.client.get(self.data_key(ref))
        except ResponseError as exc:
            if not _wrong_type(exc):
                raise TierError(f"L3 get: {exc}") from exc
            raw = b""  # a planted value of another type: corrupt, not a tier failure
        except RedisError as exc:
            raise TierError(f"L3 get: {exc}") from exc
        return self._decode(ref, raw, now)  # type: ignore[arg-type]

    def get_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]:
        if not refs:
            return {}
        names = [self.data_key(r) for r in refs]
        try:
            c = self.client
            raws = (c.mget_nonatomic(names) if isinstance(c, redis.cluster.RedisCluster)
                    else c.mget(names))
        except RedisError as exc:
            raise TierError(f"L3 mget: {exc}") from exc
        out: dict[str, Entry] = {}
        for ref, raw in zip(refs, raws, strict=True):  # type: ignore[arg-type]
            entry = self._decode(ref, raw, now)
            if entry is not None:
                out[ref.key] = entry
        return out

    # -- writes -------------------------------------------------------------------

    def _ttl_ms(self, entry: Entry, now: float) -> int | None:
        left = entry.remaining(now)
        return None if left is None else int(left * 1000)

    def _queue_set(self, pipe: Any, entry: Entry, ttl_ms: int | None) -> None:
        ref = Ref(entry.key, entry.namespace, entry.partition)
        name = self.data_key(ref)
        if ttl_ms is None:
            pipe.set(name, entry.raw)
        else:
            pipe.set(name, entry.raw, px=ttl_ms)
        for tag in entry.tags:
            tk = self.tag_key(entry.namespace, tag)
            pipe.sadd(tk, name)
            if ttl_ms is None:
                pipe.persist(tk)
            else:
                # The tag set lives as long as its longest-lived member.
                pipe.pexpire(tk, ttl_ms, nx=True)
                pipe.pexpire(tk, ttl_ms, gt=True)

    def set(self, entry: Entry, now: float) -> None:
        ttl_ms = self._ttl_ms(entry, now)
        if ttl_ms is not None and ttl_ms <= 0:
            return
        try:
            if not entry.tags:  # one command, no pipeline object
                name = self.data_key(Ref(entry.key, entry.namespace, entry.partition))
                self.client.set(name, entry.raw, px=ttl_ms)
                return
            pipe = self.client.pipeline(transaction=False)
            self._queue_set(pipe, entry, ttl_ms)
            pipe.execute()
        except RedisError as exc:
            raise TierError(f"L3 set: {exc}") from exc

    def delete(self, refs: Iterable[Ref]) -> None:
        names = [self.data_key(r) for r in refs]
        if names:
            try:
                self.client.unlink(*names)
            except RedisError as exc:
                raise TierError(f"L3 delete: {exc}") from exc

    def invalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]:
        refs: list[Ref] = []
        try:
            c = self.client
            for tag in tags:
                tk = self.tag_key(namespace, tag)
                names = list(c.smembers(tk))  # type: ignore[arg-type]
                if names:
                    raws = c.mget_nonatomic(names) if isinstance(c, redis.cluster.RedisCluster) \
                        else c.mget(names)
                    victims = [(n, ref) for n, raw in zip(names, raws, strict=True)  # type: ignore[arg-type]
                               if (ref := self._still_tagged(n, raw, namespace, tag)) is not None]
                    if victims:
                        c.unlink(*(n for n, _ in victims))
                        refs.extend(ref for _, ref in victims)
                c.unlink(tk)
        except RedisError as exc:
            raise TierError(f"L3 invalidate: {exc}") from exc
        return refs

    def _still_tagged(self, name: bytes, raw: bytes | None, namespace: str, tag: str) -> Ref | None:
        """The ref of a tag-set member that still carries ``tag`` (tag sets are never
        trimmed when an entry is overwritten with other tags)."""
        ref = self._ref_of(name, namespace)
        if ref is None or raw is None:
            return None
        try:
            return ref if tag in self._codec.decode(raw, ref.key).tags else None
        except CodecError:
            return ref  # undecodable: drop it as well

    def clear(self, namespace: str | None = None) -> None:
        try:
            c = self.client
            if isinstance(c, redis.cluster.RedisCluster):
                it = c.scan_iter(match=self._pattern(namespace), count=1000,
                                 target_nodes=redis.cluster.RedisCluster.PRIMARIES)
            else:
                it = c.scan_iter(match=self._pattern(namespace), count=1000)
            batch: list[Any] = []
            for name in it:
                batch.append(name)
                if len(batch) >= 500:
                    c.unlink(*batch)
                    batch.clear()
            if batch:
                c.unlink(*batch)
        except RedisError as exc:
            raise TierError(f"L3 clear: {exc}") from exc

    # -- news ---------------------------------------------------------------------

    def publish_many(self, messages: Sequence[tuple[str, str, str, str]]) -> None:
        """Append (origin, namespace, kind, body) messages to their namespaces' streams."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for origin, ns, kind, body in messages:
                pipe.xadd(self.news_key(ns), {"o": origin, "k": kind, "b": body},
                          maxlen=self.config.news_maxlen, approximate=True)
            pipe.execute()
        except RedisError as exc:
            raise TierError(f"L3 publish: {exc}") from exc

    def last_news_id(self, namespace: str) -> str:
        try:
            last = self.client.xrevrange(self.news_key(namespace), count=1)
        except RedisError as exc:
            raise TierError(f"L3 news: {exc}") from exc
        return last[0][0].decode() if last else "0-0"  # type: ignore[index]

    def read_news(self, namespace: str, after: str) -> list[tuple[str, str, str, str]]:
        """Messages after ``after``: (id, origin, kind, body)."""
        try:
            resp = self.client.xread({self.news_key(namespace): after}, count=500)
        except RedisError as exc:
            raise TierError(f"L3 news: {exc}") from exc
        out: list[tuple[str, str, str, str]] = []
        # RESP3 answers a map of stream -> items, RESP2 a list of [stream, items].
        streams = resp.values() if isinstance(resp, dict) else [s[1] for s in resp or []]
        for items in streams:
            for mid, fields in items:
                out.append((mid.decode(), fields[b"o"].decode(), fields[b"k"].decode(),
                            fields[b"b"].decode()))
        return out

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        # Async clients of other loops cannot be awaited here; dropping them lets
        # their pools be collected with their loops.
        self._async.clear()

    # -- async twins --------------------------------------------------------------

    async def aget(self, ref: Ref, now: float) -> Entry | None:
        try:
            raw = await (await self.aclient()).get(self.data_key(ref))
        except ResponseError as exc:
            if not _wrong_type(exc):
                raise TierError(f"L3 get: {exc}") from exc
            raw = b""  # a planted value of another type: corrupt, not a tier failure
        except RedisError as exc:
            raise TierError(f"L3 get: {exc}") from exc
        if raw is None:
            return None
        try:
            entry = self._codec.decode(raw, ref.key)
        except CodecError as exc:
            self._report_corrupt(ref, str(exc))
            await self.adelete([ref])
            return None
        return None if entry.expires is not None and entry.expires <= now else entry

    async def aget_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]:
        if not refs:
            return {}
        names = [self.data_key(r) for r in refs]
        try:
            c = await self.aclient()
            raws = await (c.mget_nonatomic(names)
                          if isinstance(c, redis.asyncio.cluster.RedisCluster) else c.mget(names))
        except RedisError as exc:
            raise TierError(f"L3 mget: {exc}") from exc
        out: dict[str, Entry] = {}
        bad: list[Ref] = []
        for ref, raw in zip(refs, raws, strict=True):
            if raw is None:
                continue
            try:
                entry = self._codec.decode(raw, ref.key)
            except CodecError as exc:
                self._report_corrupt(ref, str(exc))
                bad.append(ref)
                continue
            if entry.expires is None or entry.expires > now:
                out[ref.key] = entry
        if bad:
            await self.adelete(bad)
        return out

    async def aset(self, entry: Entry, now: float) -> None:
        ttl_ms = self._ttl_ms(entry, now)
        if ttl_ms is not None and ttl_ms <= 0:
            return
        try:
            c = await self.aclient()
            if not entry.tags:
                name = self.data_key(Ref(entry.key, entry.namespace, entry.partition))
                await c.set(name, entry.raw, px=ttl_ms)
                return
            pipe = c.pipeline(transaction=False)
            self._queue_set(pipe, entry, ttl_ms)
            await pipe.execute()
        except RedisError as exc:
            raise TierError(f"L3 set: {exc}") from exc

    async def adelete(self, refs: Iterable[Ref]) -> None:
        names = [self.data_key(r) for r in refs]
        if names:
            try:
                await (await self.aclient()).unlink(*names)
            except RedisError as exc:
                raise TierError(f"L3 delete: {exc}") from exc

    async def ainvalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]:
        # Rare and multi-step: reuse the sync implementation off the loop.
        return await asyncio.to_thread(self.invalidate, namespace, tags)

    async def aclear(self, namespace: str | None = None) -> None:
        await asyncio.to_thread(self.clear, namespace)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._async.pop(loop, None)
        if client is not None:
            await client.aclose()
        self.close()

