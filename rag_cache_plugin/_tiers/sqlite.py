"""L2: one SQLite file shared by every process on a host.

The schema is the design (as in diskcache): store, expire and access times,
access count and size per entry; tags in their own table; a running total of
the size kept by triggers, so the cull never scans.  WAL + ``synchronous=NORMAL``
lets readers run beside a writer; writes take ``BEGIN IMMEDIATE`` so two writers
queue on the busy timeout instead of failing on lock upgrade.

``SqliteTier`` holds the sync operations and inherits the rest: the file and its
connections (``_sqlite_file``), the size bounds (``_sqlite_room``) and the async twins
(``_sqlite_async``).  The schema and statements are in ``_sqlite_sql``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from .._codec import Codec
from .._entry import Entry
from .._errors import CodecError, TierError
from .._events import Corrupt, Expired, TierName
from . import Emit, Ref
from ._sqlite_async import _SqliteAsync
from ._sqlite_file import _writer_lock
from ._sqlite_sql import (
    _ADD_TAG,
    _DEL_EXPIRED,
    _DEL_KEY,
    _GET,
    _PROMOTE,
    _SEMANTIC_MERGE,
    _SIZE,
    _TOUCH,
    _UPSERT,
    _invalidation_sql,
)

__all__ = ["SqliteTier"]

_NEWS_KEEP = 600.0  # seconds of news kept for peers that poll
_NEWS_MIN_ROWS = 10_000  # ... and at least this many rows


class SqliteTier(_SqliteAsync):
    """The L2 tier over one SQLite file."""

    name: TierName = "l2"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: Codec,
        max_bytes: int,
        busy_timeout: float = 2.0,
        emit: Emit | None = None,
        pragmas: Mapping[str, int | str] | None = None,
    ) -> None:
        self.path = Path(path)
        # Working connections never create the file (mode=rw): only _open creates it,
        # with its schema.  A connection racing a deleted file would otherwise leave
        # an empty, schema-less database behind.
        self._rw_uri = self.path.absolute().as_uri() + "?mode=rw"
        self._pragmas = dict(pragmas or {})
        self.max_bytes = max_bytes
        self._codec = codec
        self._timeout = busy_timeout
        self._emit = emit
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        # Reads must not write; what they learn (access times, expired keys) is
        # applied inside the next write transaction.
        self._touched: dict[str, float] = {}
        self._expired: set[str] = set()
        self._pending_lock = threading.Lock()
        self._writer = _writer_lock(self.path)
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[aiosqlite.Connection, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()
        self._async_gen: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = (
            weakref.WeakKeyDictionary())
        self._generation = 0  # bumped when a corrupt file is replaced
        # The file our connections use, as (device, inode): a peer process (or another
        # instance) that replaced a corrupt file leaves our connections on the old
        # one, renamed aside; we notice within _RECHECK seconds and follow.
        self._file: tuple[int, int] | None = None
        self._checked = time.monotonic()
        self._replace_lock = threading.RLock()  # _follow -> _open -> _replace_corrupt
        self._closed = False
        self._open()

    # -- reads --------------------------------------------------------------------

    def _decode(self, ref: Ref, raw: Any, expire: float | None, now: float) -> Entry | None:
        if expire is not None and not isinstance(expire, int | float):
            self._drop_corrupt(ref, "expire_time is not a number")
            return None
        if expire is not None and expire <= now:
            with self._pending_lock:
                self._expired.add(ref.key)
            if self._emit is not None:
                self._emit(Expired(ref.namespace, ref.key, "l2"))
            return None
        try:
            entry = self._codec.decode(raw, ref.key)
        except CodecError as exc:
            self._drop_corrupt(ref, str(exc))
            return None
        with self._pending_lock:
            self._touched[ref.key] = now
        return entry

    def _drop_corrupt(self, ref: Ref, reason: str) -> None:
        if self._emit is not None:
            self._emit(Corrupt(ref.namespace, ref.key, "l2", reason))
        try:
            with self._write() as conn:
                conn.execute(_DEL_KEY, (ref.key,))
        except TierError:
            pass  # the row is refused again on the next read and retried then

    def get(self, ref: Ref, now: float) -> Entry | None:
        with self._guard():
            row = self._conn().execute(_GET, (ref.key,)).fetchone()
        if row is None:
            return None
        return self._decode(ref, row[0], row[1], now)

    def get_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]:
        by_key = {r.key: r for r in refs}
        keys = list(by_key)
        out: dict[str, Entry] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            sql = ("SELECT key, CAST(value AS BLOB), expire_time FROM entries WHERE key IN "
                   f"({','.join('?' * len(chunk))})")
            with self._guard():
                rows = self._conn().execute(sql, chunk).fetchall()
            for key, raw, expire in rows:
                entry = self._decode(by_key[key], raw, expire, now)
                if entry is not None:
                    out[key] = entry
        return out

    def iter_entries(self, namespace: str, partition: str | None = None) -> Iterator[Entry]:
        """Every live entry of a namespace (or one partition): the semantic index
        loads its vectors from here."""
        now = time.time()
        sql = ("SELECT key, partition, CAST(value AS BLOB) FROM entries"
               " WHERE ns = ? AND (expire_time IS NULL OR expire_time > ?)")
        args: list[Any] = [namespace, now]
        if partition is not None:
            sql += " AND partition = ?"
            args.append(partition)
        with self._guard():
            rows = self._conn().execute(sql, args).fetchall()
        for key, part, raw in rows:
            try:
                yield self._codec.decode(raw, key)
            except CodecError as exc:
                self._drop_corrupt(Ref(key, namespace, part), str(exc))

    # -- writes -------------------------------------------------------------------

    def _take_pending(self, now: float) -> tuple[list[tuple[float, str]], list[tuple[str, float]]]:
        with self._pending_lock:
            touched = [(t, k) for k, t in self._touched.items()]
            expired = [(k, now) for k in self._expired]
            self._touched.clear()
            self._expired.clear()
        return touched, expired

    def set(self, entry: Entry, now: float, *, replace: bool = True) -> None:
        """Write ``entry``; ``replace=False`` (promotion) leaves a live row in place."""
        self._with_room(lambda: self._set(entry, now, replace), entry.size)

    def _set(self, entry: Entry, now: float, replace: bool) -> None:
        evicted: list[tuple[str, str]] = []
        touched, expired = self._take_pending(now)
        with self._write() as conn:
            cur = conn.execute(_UPSERT if replace else _PROMOTE,
                               (entry.key, entry.namespace, entry.partition, now,
                                entry.expires, now, entry.size, entry.raw))
            # rowcount 0: promotion found a live row and left it (and its tags).  A
            # replaced row's old tags went with a trigger (entries_retag).
            if cur.rowcount and entry.tags:
                conn.executemany(_ADD_TAG, [(entry.namespace, t, entry.key) for t in entry.tags])
            if touched:
                conn.executemany(_TOUCH, touched)
            if expired:
                conn.executemany(_DEL_EXPIRED, expired)
            excess = self._cull_plan(conn.execute(_SIZE).fetchone()[0])
            if excess:
                evicted = self._cull(conn, now, excess)
        self._report_evicted(evicted)

    def delete(self, refs: Iterable[Ref]) -> None:
        keys = [(r.key,) for r in refs]
        if keys:
            with self._write() as conn:
                conn.executemany(_DEL_KEY, keys)

    def invalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]:
        if not tags:
            return []
        select, delete, untag = _invalidation_sql(len(tags))
        args = (namespace, *tags)
        with self._write() as conn:
            rows = conn.execute(select, args).fetchall()
            conn.execute(delete, args)
            conn.execute(untag, args)
        return [Ref(*r) for r in rows]

    def clear(self, namespace: str | None = None) -> None:
        with self._write() as conn:
            if namespace is None:
                conn.execute("DELETE FROM entries")
                conn.execute("DELETE FROM tags")
            else:
                conn.execute("DELETE FROM entries WHERE ns = ?", (namespace,))
                conn.execute("DELETE FROM tags WHERE ns = ?", (namespace,))

    def apply_peer_news(self, removals: Sequence[tuple[str, float | None]],
                        invalidations: Sequence[tuple[str, Sequence[str]]],
                        clears: Sequence[str | None]) -> None:
        """Apply what peers on other hosts changed, in one transaction: keys they
        removed or replaced (only copies stored before ``at``), tags they invalidated,
        namespaces they cleared."""
        with self._write() as conn:
            for ns in clears:
                if ns is None:
                    conn.execute("DELETE FROM entries")
                else:
                    conn.execute("DELETE FROM entries WHERE ns = ?", (ns,))
            for ns, tags in invalidations:
                if tags:
                    _select, delete, untag = _invalidation_sql(len(tags))
                    conn.execute(delete, (ns, *tags))
                    conn.execute(untag, (ns, *tags))
            conn.executemany(_DEL_KEY, [(k,) for k, at in removals if at is None])
            conn.executemany("DELETE FROM entries WHERE key = ? AND store_time < ?",
                             [(k, at) for k, at in removals if at is not None])

    # -- size and maintenance -----------------------------------------------------

    def total_bytes(self) -> int:
        with self._guard():
            return int(self._conn().execute(_SIZE).fetchone()[0])

    def count(self) -> int:
        with self._guard():
            return int(self._conn().execute("SELECT count(*) FROM entries").fetchone()[0])

    # -- semantic state -------------------------------------------------------------

    def semantic_put(self, namespace: str, partition: str, kind: str, name: str,
                     value: float, merge: str = "set") -> None:
        """Record one fact of the semantic layer (``merge``: set, max or add)."""
        sql = ("INSERT INTO semantic (ns, partition, kind, name, value, at)"
               " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(ns, partition, kind, name) DO UPDATE SET"
               f" value = {_SEMANTIC_MERGE[merge]}, at = excluded.at")
        with self._write() as conn:
            conn.execute(sql, (namespace, partition, kind, name, value, time.time()))

    def semantic_rows(self, namespace: str) -> list[tuple[str, str, str, float]]:
        """(partition, kind, name, value) of one namespace."""
        with self._guard():
            rows = self._conn().execute(
                "SELECT partition, kind, name, value FROM semantic WHERE ns = ?", (namespace,)
            ).fetchall()
        return [tuple(r) for r in rows]

    # -- news for peers sharing the file ------------------------------------------

    def publish_many(self, messages: Sequence[tuple[str, str, str, str]]) -> None:
        """Append (origin, namespace, kind, body) rows in one transaction."""
        # A full file must not swallow news (peers' L1 would miss invalidations).
        self._with_room(lambda: self._publish_many(messages), sum(len(m[3]) for m in messages))

    def _publish_many(self, messages: Sequence[tuple[str, str, str, str]]) -> None:
        now = time.time()
        with self._write() as conn:
            conn.executemany("INSERT INTO news (at, origin, ns, kind, body) VALUES (?, ?, ?, ?, ?)",
                             [(now, o, ns, k, b) for o, ns, k, b in messages])
            # Trim by sequence number (the primary key): no scan, no index to maintain.
            last = conn.execute("SELECT max(seq) FROM news").fetchone()[0] or 0
            if last % 256 < len(messages):
                conn.execute("DELETE FROM news WHERE seq <= ? AND at < ?",
                             (last - _NEWS_MIN_ROWS, now - _NEWS_KEEP))

    def read_news(self, after: int) -> list[tuple[int, str, str, str, str]]:
        """News rows with ``seq > after``: (seq, origin, ns, kind, body)."""
        with self._guard():
            rows = self._conn().execute(
                "SELECT seq, origin, ns, kind, body FROM news WHERE seq > ? "
                "ORDER BY seq LIMIT 1000",
                (after,),
            ).fetchall()
        return [tuple(r) for r in rows]

    def last_news(self) -> int:
        with self._guard():
            row = self._conn().execute("SELECT max(seq) FROM news").fetchone()
        return int(row[0] or 0)

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self._drop_connections()
        for conn, _ in list(self._async.values()):
            conn.stop()
        self._async.clear()
