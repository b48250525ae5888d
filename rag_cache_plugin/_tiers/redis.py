"""L3: Redis standalone, Redis Cluster or a Sentinel-managed primary, shared by every
process and host.

Keys carry the partition as a hash tag (``ragc:<ns>:{<partition>}:<key>``) so one
partition's entries share a slot.  Values are written with ``SET ... PX`` in one
command (never set-then-expire).

Clients and the failure policy are in ``_redis_calls``; reads sent straight to the
node that serves a partition are in ``_redis_direct``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
import redis.cluster
from redis.exceptions import ResponseError

from .._codec import Codec
from .._config import RedisConfig
from .._entry import Entry
from .._errors import CodecError, TierError
from .._events import Corrupt, TierName
from .._keys import KeyMaker
from .._redisconn import AsyncClient, Mode, SyncClient
from . import Emit, Ref
from ._redis_calls import _ERRORS
from ._redis_direct import _DirectReads

__all__ = ["RedisTier"]


def _wrong_type(exc: TierError) -> bool:
    """GET on a key holding a list, hash, ...: a planted or foreign value."""
    cause = exc.__cause__
    return isinstance(cause, ResponseError) and str(cause).startswith("WRONGTYPE")


class RedisTier(_DirectReads):
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
        # Known from the configuration, or detected on first use.
        self._mode: Mode | None = (
            "sentinel" if config.sentinels else
            None if config.cluster is None else "cluster" if config.cluster else "standalone")
        self._budget = config.timeout
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._async_ready: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
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

    def _names(self, refs: Sequence[Ref]) -> list[str]:
        """``data_key`` of each ref; a batch of one namespace builds its head once."""
        ns = refs[0].namespace
        if any(r.namespace != ns for r in refs):
            return [self.data_key(r) for r in refs]
        head = f"{self.config.prefix}:{self._ns(ns)}:{{"
        return [f"{head}{r.partition}}}:{r.key}" for r in refs]

    # -- reads --------------------------------------------------------------------

    def _decode(self, ref: Ref, raw: bytes | None, now: float) -> Entry | None:
        if raw is None:
            return None
        try:
            entry = self._codec.decode(raw, ref.key)
        except CodecError as exc:
            self._report_corrupt(ref, str(exc))
            with contextlib.suppress(TierError):
                self.delete([ref])
            return None
        if entry.expires is not None and entry.expires <= now:
            return None  # clock skew between hosts: Redis has not expired it yet
        return entry

    def _report_corrupt(self, ref: Ref, reason: str) -> None:
        if self._emit is not None:
            self._emit(Corrupt(ref.namespace, ref.key, "l3", reason))

    def get(self, ref: Ref, now: float) -> Entry | None:
        try:
            raw = self._call(self._get_op(self.data_key(ref), ref.partition), "get")
        except TierError as exc:
            if not _wrong_type(exc):
                raise
            raw = b""  # a planted value of another type: corrupt, not a tier failure
        return self._decode(ref, raw, now)

    def get_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]:
        if not refs:
            return {}
        names = self._names(refs)
        raws = self._call(self._mget_op(names, refs), "mget")
        out: dict[str, Entry] = {}
        for ref, raw in zip(refs, raws, strict=True):
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

    def _set_op(self, entry: Entry, ttl_ms: int | None) -> Callable[[Any], Any]:
        if not entry.tags:  # one command, no pipeline object
            name = self.data_key(Ref(entry.key, entry.namespace, entry.partition))
            return lambda c: c.set(name, entry.raw, px=ttl_ms)

        def piped(c: Any) -> Any:
            pipe = c.pipeline(transaction=False)
            self._queue_set(pipe, entry, ttl_ms)
            return pipe.execute()
        return piped

    def set(self, entry: Entry, now: float) -> None:
        ttl_ms = self._ttl_ms(entry, now)
        if ttl_ms is not None and ttl_ms <= 0:
            return
        self._call(self._set_op(entry, ttl_ms), "set")

    def delete(self, refs: Iterable[Ref]) -> None:
        names = [self.data_key(r) for r in refs]
        if names:
            self._call(lambda c: c.unlink(*names), "delete")

    def invalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]:
        refs: list[Ref] = []
        for tag in tags:
            refs.extend(self._invalidate_tag(namespace, tag))
        return refs

    def _invalidate_tag(self, namespace: str, tag: str) -> list[Ref]:
        tk = self.tag_key(namespace, tag)
        names: list[bytes] = list(self._call(lambda c: c.smembers(tk), "invalidate"))
        victims: list[tuple[bytes, Ref]] = []
        if names:
            raws = self._call(lambda c: self._mget_any(c, names), "invalidate")
            victims = [(n, ref) for n, raw in zip(names, raws, strict=True)
                       if (ref := self._still_tagged(n, raw, namespace, tag)) is not None]
            if victims:
                doomed = [n for n, _ in victims]
                self._call(lambda c: c.unlink(*doomed), "invalidate")
        self._call(lambda c: c.unlink(tk), "invalidate")
        return [ref for _, ref in victims]

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
        except _ERRORS as exc:
            raise TierError(f"L3 clear: {exc}") from exc

    # -- news ---------------------------------------------------------------------

    def publish_many(self, messages: Sequence[tuple[str, str, str, str]]) -> None:
        """Append (origin, namespace, kind, body) messages to their namespaces' streams."""
        def op(c: Any) -> Any:
            pipe = c.pipeline(transaction=False)
            for origin, ns, kind, body in messages:
                pipe.xadd(self.news_key(ns), {"o": origin, "k": kind, "b": body},
                          maxlen=self.config.news_maxlen, approximate=True)
            return pipe.execute()
        self._call(op, "publish")

    def last_news_id(self, namespace: str) -> str:
        key = self.news_key(namespace)
        last: Any = self._call(lambda c: c.xrevrange(key, count=1), "news")
        return str(last[0][0].decode()) if last else "0-0"

    def read_news(self, namespace: str, after: str) -> list[tuple[str, str, str, str]]:
        """Messages after ``after``: (id, origin, kind, body)."""
        key = self.news_key(namespace)
        resp: Any = self._call(lambda c: c.xread({key: after}, count=500), "news")
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
        name = self.data_key(ref)
        try:
            if self._mode == "cluster":
                raw = await self._acall(
                    lambda c: self._anode_call(c, ref.partition, "GET", name), "get")
            else:
                raw = await self._acall(lambda c: c.get(name), "get")
        except TierError as exc:
            if not _wrong_type(exc):
                raise
            raw = b""  # a planted value of another type: corrupt, not a tier failure
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
        names = self._names(refs)
        partition = refs[0].partition
        if self._mode is None:
            raws = await self._acall(lambda c: self._mget_any(c, names), "mget")
        elif self._mode != "cluster":
            raws = await self._acall(lambda c: c.mget(names), "mget")
        elif any(r.partition != partition for r in refs):
            raws = await self._acall(lambda c: c.mget_nonatomic(names), "mget")
        else:
            raws = await self._acall(
                lambda c: self._anode_call(c, partition, "MGET", *names), "mget")
        out: dict[str, Entry] = {}
        bad: list[Ref] = []
        decode = self._codec.decode
        for ref, raw in zip(refs, raws, strict=True):
            if raw is None:
                continue
            try:
                entry = decode(raw, ref.key)
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
        await self._acall(self._set_op(entry, ttl_ms), "set")

    async def adelete(self, refs: Iterable[Ref]) -> None:
        names = [self.data_key(r) for r in refs]
        if names:
            await self._acall(lambda c: c.unlink(*names), "delete")

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
