"""L2: one SQLite file shared by every process on a host.

The schema is the design (as in diskcache): store, expire and access times,
access count and size per entry; tags in their own table; a running total of
the size kept by triggers, so the cull never scans.  WAL + ``synchronous=NORMAL``
lets readers run beside a writer; writes take ``BEGIN IMMEDIATE`` so two writers
queue on the busy timeout instead of failing on lock upgrade.

Reads on the async path run inline: a WAL read of one row costs microseconds,
less than the thread hop aiosqlite would add.  Writes on the async path go
through aiosqlite so a busy wait never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from .._codec import Codec
from .._entry import Entry
from .._errors import CodecError, TierError
from .._events import Corrupt, Evicted, Expired, TierName
from . import Emit, Ref

__all__ = ["SqliteTier"]

_log = logging.getLogger("rag_cache_plugin")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    ns TEXT NOT NULL,
    partition TEXT NOT NULL,
    store_time REAL NOT NULL,
    expire_time REAL,                      -- NULL: never expires
    access_time REAL NOT NULL,             -- cull order (least recently used first)
    access_count INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    value BLOB NOT NULL                    -- codec envelope (maybe signed or encrypted)
);
CREATE INDEX IF NOT EXISTS entries_expire ON entries(expire_time) WHERE expire_time IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_access ON entries(access_time);
CREATE INDEX IF NOT EXISTS entries_ns_partition ON entries(ns, partition);
CREATE TABLE IF NOT EXISTS tags (
    ns TEXT NOT NULL, tag TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (ns, tag, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_key ON tags(key);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(name, value) VALUES ('size', 0), ('schema', 1);
-- Triggers keep the total size exact whichever process or statement changes a row.
CREATE TRIGGER IF NOT EXISTS entries_ins AFTER INSERT ON entries BEGIN
    UPDATE meta SET value = value + NEW.size WHERE name = 'size';
END;
CREATE TRIGGER IF NOT EXISTS entries_del AFTER DELETE ON entries BEGIN
    UPDATE meta SET value = value - OLD.size WHERE name = 'size';
    DELETE FROM tags WHERE key = OLD.key;
END;
CREATE TRIGGER IF NOT EXISTS entries_upd AFTER UPDATE OF size ON entries BEGIN
    UPDATE meta SET value = value - OLD.size + NEW.size WHERE name = 'size';
END;
-- What semantic matching learned and must keep across restarts: per-partition
-- thresholds tightened by feedback, blocked (query, entry) pairs, confirmations, and
-- which embedding models wrote the vectors stored in entries.  clear() keeps it.
CREATE TABLE IF NOT EXISTS semantic (
    ns TEXT NOT NULL, partition TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    value REAL NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (ns, partition, kind, name)
) WITHOUT ROWID;
-- News for peers sharing this file: invalidations, clears, new vectors.
CREATE TABLE IF NOT EXISTS news (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL, origin TEXT NOT NULL, ns TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL
);
"""

# CAST: a value column holding TEXT (a damaged or tampered row) comes back as bytes the
# codec refuses, instead of failing inside sqlite3's UTF-8 decoding as a tier error.
_GET = "SELECT CAST(value AS BLOB), expire_time FROM entries WHERE key = ?"
_UPSERT = """
INSERT INTO entries
    (key, ns, partition, store_time, expire_time, access_time, access_count, size, value)
VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)
ON CONFLICT(key) DO UPDATE SET ns = excluded.ns, partition = excluded.partition,
    store_time = excluded.store_time, expire_time = excluded.expire_time,
    access_time = excluded.access_time, size = excluded.size, value = excluded.value
"""
# Promotion from L3 writes a row only where none is live: a concurrent store of a newer
# version must not be overwritten by the older one a lookup read from L3.
_PROMOTE = _UPSERT + """
    WHERE entries.expire_time IS NOT NULL AND entries.expire_time <= excluded.access_time
"""
_DEL_TAGS = "DELETE FROM tags WHERE key = ?"
_ADD_TAG = "INSERT OR IGNORE INTO tags (ns, tag, key) VALUES (?, ?, ?)"
_TOUCH = "UPDATE entries SET access_time = ?, access_count = access_count + 1 WHERE key = ?"
_DEL_KEY = "DELETE FROM entries WHERE key = ?"
# A key a read found expired may have been stored again since (by this process or a
# peer): delete it only if it is still expired.
_DEL_EXPIRED = "DELETE FROM entries WHERE key = ? AND expire_time <= ?"
_SIZE = "SELECT value FROM meta WHERE name = 'size'"
_SEMANTIC_MERGE = {
    "set": "excluded.value",
    "max": "max(value, excluded.value)",  # thresholds only ever tighten
    "add": "value + excluded.value",  # counters
}
_NEWS_KEEP = 600.0  # seconds of news kept for peers that poll
_NEWS_MIN_ROWS = 10_000  # ... and at least this many rows
_FULL_RETRIES = 3

_CORRUPTION_MARKERS = ("malformed", "not a database", "file is encrypted", "disk image")
_RECHECK = 1.0  # seconds between checks that the path still names the file we use


def _invalidation_sql(n: int) -> tuple[str, str, str]:
    """Select, delete and untag statements for ``n`` tags of one namespace."""
    tagged = f"SELECT key FROM tags WHERE ns = ? AND tag IN ({','.join('?' * n)})"
    return (
        f"SELECT key, ns, partition FROM entries WHERE key IN ({tagged})",
        f"DELETE FROM entries WHERE key IN ({tagged})",
        f"DELETE FROM tags WHERE ns = ? AND tag IN ({','.join('?' * n)})",
    )


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(
        m in str(exc).lower() for m in _CORRUPTION_MARKERS
    )


def _is_full(exc: BaseException | None) -> bool:
    """SQLITE_FULL: the file reached ``max_page_count`` or the disk is full."""
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "database or disk is full" in str(exc)
    )


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class SqliteTier:
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

    # -- connections --------------------------------------------------------------

    def _pragma_sql(self) -> list[str]:
        # Names and values were checked by CacheConfig (words and integers only).
        return [f"PRAGMA busy_timeout = {int(self._timeout * 1000)}",
                "PRAGMA synchronous = NORMAL",
                *(f"PRAGMA {k} = {v}" for k, v in self._pragmas.items())]

    def _configure(self, conn: sqlite3.Connection) -> None:
        for sql in self._pragma_sql():
            conn.execute(sql)

    def _open(self) -> None:
        """Create or check the file; a file that is not a usable database is moved
        aside and replaced by a fresh one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _file_id(self.path)
        try:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            try:
                self._configure(conn)
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
                conn.execute("SELECT count(*) FROM entries WHERE rowid < 0").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise TierError(f"cannot open {self.path}: {exc}") from exc
            self._replace_corrupt(str(exc))
        else:
            self._file = _file_id(self.path)

    def _replace_corrupt(self, reason: str) -> None:
        """Move the damaged file aside and start a fresh one, unless someone (a
        peer process, another instance, another thread) already did: then follow."""
        with self._replace_lock, self._file_lock():
            self._drop_connections()
            self._generation += 1
            current = _file_id(self.path)
            if current is not None and current != self._file:
                self._file = current  # already replaced: use the new file
                return
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}")
            _log.error("rag-cache: %s is damaged (%s); moved to %s", self.path, reason, aside)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(Path(str(self.path) + suffix), Path(str(aside) + suffix))
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            try:
                self._configure(conn)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
            finally:
                conn.close()
            self._file = _file_id(self.path)
        if self._emit is not None:
            self._emit(Corrupt("", "", "l2", f"database file replaced: {reason}"))

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialize replacement across processes: two processes that find the file
        damaged at once must not each move the other's fresh file aside."""
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _follow(self) -> None:
        """Every _RECHECK seconds: does the path still name our file?  (A peer may
        have replaced a corrupt file, or the file was deleted.)"""
        self._checked = time.monotonic()
        current = _file_id(self.path)
        if current == self._file:
            return
        with self._replace_lock:
            # Deleted under us (start a fresh file) or replaced (check it, and give it
            # the schema if whoever created it did not).
            self._open()
            self._drop_connections()  # they hold the old file open
            self._generation += 1

    def _conn(self) -> sqlite3.Connection:
        if time.monotonic() - self._checked > _RECHECK:
            self._follow()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "gen", -1) != self._generation:
            if self._closed:
                raise TierError("L2 is closed")
            conn = sqlite3.connect(self._rw_uri, uri=True, timeout=self._timeout,
                                   isolation_level=None, check_same_thread=False)
            self._configure(conn)
            self._local.conn, self._local.gen = conn, self._generation
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _drop_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn sqlite errors into TierError; replace a corrupted file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                self._replace_corrupt(str(exc))
            raise TierError(f"L2: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._guard():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

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

    def _cull_plan(self, size: int) -> int:
        """How many bytes to free: down to 90% of the bound once it is exceeded, so
        the cull runs rarely and in batches."""
        return size - int(self.max_bytes * 0.9) if size > self.max_bytes else 0

    def set(self, entry: Entry, now: float, *, replace: bool = True) -> None:
        """Write ``entry``; ``replace=False`` (promotion) leaves a live row in place."""
        self._with_room(lambda: self._set(entry, now, replace), entry.size)

    def _with_room(self, write: Callable[[], None], need: int) -> None:
        """Run ``write``; when the file is full, make room and try again.  A few rounds,
        because a concurrent writer (another thread, the news feed, another process)
        may take the freed pages first; then the failure is the caller's miss."""
        for attempt in range(_FULL_RETRIES + 1):
            try:
                write()
                return
            except TierError as exc:
                if (attempt == _FULL_RETRIES or not _is_full(exc.__cause__)
                        or not self._make_room(time.time(), need)):
                    raise

    def _set(self, entry: Entry, now: float, replace: bool) -> None:
        evicted: list[tuple[str, str]] = []
        touched, expired = self._take_pending(now)
        with self._write() as conn:
            cur = conn.execute(_UPSERT if replace else _PROMOTE,
                               (entry.key, entry.namespace, entry.partition, now,
                                entry.expires, now, entry.size, entry.raw))
            if cur.rowcount:  # 0: promotion found a live row and left it (and its tags)
                conn.execute(_DEL_TAGS, (entry.key,))
                if entry.tags:
                    conn.executemany(_ADD_TAG,
                                     [(entry.namespace, t, entry.key) for t in entry.tags])
            if touched:
                conn.executemany(_TOUCH, touched)
            if expired:
                conn.executemany(_DEL_EXPIRED, expired)
            excess = self._cull_plan(conn.execute(_SIZE).fetchone()[0])
            if excess:
                evicted = self._cull(conn, now, excess)
        self._report_evicted(evicted)

    def _cull(self, conn: sqlite3.Connection, now: float, excess: int) -> list[tuple[str, str]]:
        conn.execute("DELETE FROM entries WHERE expire_time <= ?", (now,))
        evicted: list[tuple[str, str]] = []
        while (excess := self._cull_plan(conn.execute(_SIZE).fetchone()[0])) > 0:
            rows = conn.execute(
                "SELECT key, ns, size FROM entries ORDER BY access_time LIMIT 256"
            ).fetchall()
            if not rows:
                break
            take: list[tuple[str]] = []
            for key, ns, size in rows:
                take.append((key,))
                evicted.append((ns, key))
                excess -= size
                if excess <= 0:
                    break
            conn.executemany(_DEL_KEY, take)
        return evicted

    def _report_evicted(self, evicted: list[tuple[str, str]], reason: str = "capacity") -> None:
        if self._emit is not None:
            for ns, key in evicted:
                self._emit(Evicted(ns, key, "l2", reason))

    def _make_room(self, now: float, need: int) -> bool:
        """The file hit a hard limit (``max_page_count``, a full disk) below
        ``max_bytes``: drop the expired and the least recently used entries, a tenth
        of the bytes and at least twice the new entry, so writes go on (SQLite
        reuses the freed pages).  False, evicting nothing, for an entry larger than
        all the others together: emptying the cache would not make it fit."""
        evicted: list[tuple[str, str]] = []
        with self._write() as conn:
            total = conn.execute(_SIZE).fetchone()[0]
            if need > total:
                return False
            conn.execute("DELETE FROM entries WHERE expire_time <= ?", (now,))
            conn.execute("DELETE FROM news WHERE at < ?", (now - 5.0,))
            goal = max(2 * need, total // 10)
            while goal > 0:
                rows = conn.execute(
                    "SELECT key, ns, size FROM entries ORDER BY access_time LIMIT 256"
                ).fetchall()
                if not rows:
                    break
                take: list[tuple[str]] = []
                for key, ns, size in rows:
                    take.append((key,))
                    evicted.append((ns, key))
                    goal -= size
                    if goal <= 0:
                        break
                conn.executemany(_DEL_KEY, take)
        _log.warning("rag-cache: %s is full; evicted %d entries", self.path, len(evicted))
        self._report_evicted(evicted, "full")
        return True

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

    # -- async twins --------------------------------------------------------------

    async def _aconn(self) -> tuple[aiosqlite.Connection, asyncio.Lock]:
        loop = asyncio.get_running_loop()
        if time.monotonic() - self._checked > _RECHECK:
            self._follow()
        pair = self._async.get(loop)
        if pair is not None and self._async_gen.get(loop) != self._generation:
            # The file was replaced: this connection still points at the old one.
            self._async.pop(loop, None)
            pair[0].stop()
            pair = None
        if pair is None:
            if self._closed:
                raise TierError("L2 is closed")
            pending = aiosqlite.connect(self._rw_uri, uri=True, timeout=self._timeout,
                                        isolation_level=None)
            # A forgotten close must not keep the interpreter alive at exit.
            thread = getattr(pending, "_thread", None)
            if thread is not None:
                thread.daemon = True
            conn = await pending
            for sql in self._pragma_sql():
                await conn.execute(sql)
            self._async_gen[loop] = self._generation
            pair = self._async.setdefault(loop, (conn, asyncio.Lock()))
            if pair[0] is not conn:
                await conn.close()
        return pair

    async def _arun(self, statements: list[tuple[str, Any, bool]]) -> list[list[Any]]:
        """Run statements in one immediate transaction on this loop's connection.
        Each item is (sql, params, many); returns rows of each statement."""
        conn, lock = await self._aconn()
        out: list[list[Any]] = []
        async with lock:
            try:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params, many in statements:
                        if many:
                            await conn.executemany(sql, params)
                            out.append([])
                        else:
                            async with conn.execute(sql, params) as cur:
                                out.append(list(await cur.fetchall()))
                    await conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        await conn.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    self._replace_corrupt(str(exc))
                    self._async.pop(asyncio.get_running_loop(), None)
                    conn.stop()
                raise TierError(f"L2: {exc}") from exc
        return out

    async def aget(self, ref: Ref, now: float) -> Entry | None:
        return self.get(ref, now)

    async def aget_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]:
        return self.get_many(refs, now)

    async def aset(self, entry: Entry, now: float, *, replace: bool = True) -> None:
        if not replace:
            # Promotion (rare: an L3 hit) needs the conditional tag rewrite of ``set``.
            await asyncio.to_thread(self.set, entry, now, replace=False)
            return
        touched, expired = self._take_pending(now)
        stmts: list[tuple[str, Any, bool]] = [
            (_UPSERT, (entry.key, entry.namespace, entry.partition, now, entry.expires, now,
                       entry.size, entry.raw), False),
            (_DEL_TAGS, (entry.key,), False),
        ]
        if entry.tags:
            stmts.append((_ADD_TAG, [(entry.namespace, t, entry.key) for t in entry.tags], True))
        if touched:
            stmts.append((_TOUCH, touched, True))
        if expired:
            stmts.append((_DEL_EXPIRED, expired, True))
        stmts.append((_SIZE, (), False))
        for attempt in range(_FULL_RETRIES + 1):  # as ``_with_room``
            try:
                rows = await self._arun(stmts)
                break
            except TierError as exc:
                if (attempt == _FULL_RETRIES or not _is_full(exc.__cause__)
                        or not await asyncio.to_thread(self._make_room, now, entry.size)):
                    raise
        if self._cull_plan(rows[-1][0][0]):
            # Rare: cull on the sync path in a worker thread rather than re-implementing it.
            await asyncio.to_thread(self._cull_now, now)

    def _cull_now(self, now: float) -> None:
        with self._write() as conn:
            excess = self._cull_plan(conn.execute(_SIZE).fetchone()[0])
            evicted = self._cull(conn, now, excess) if excess else []
        self._report_evicted(evicted)

    async def adelete(self, refs: Iterable[Ref]) -> None:
        keys = [(r.key,) for r in refs]
        if keys:
            await self._arun([(_DEL_KEY, keys, True)])

    async def ainvalidate(self, namespace: str, tags: Sequence[str]) -> list[Ref]:
        if not tags:
            return []
        select, delete, untag = _invalidation_sql(len(tags))
        args = (namespace, *tags)
        rows = await self._arun([(select, args, False), (delete, args, False),
                                 (untag, args, False)])
        return [Ref(*r) for r in rows[0]]

    async def aclear(self, namespace: str | None = None) -> None:
        if namespace is None:
            await self._arun([("DELETE FROM entries", (), False), ("DELETE FROM tags", (), False)])
        else:
            await self._arun([("DELETE FROM entries WHERE ns = ?", (namespace,), False),
                              ("DELETE FROM tags WHERE ns = ?", (namespace,), False)])

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        pair = self._async.pop(loop, None)
        if pair is not None:
            await pair[0].close()
        self.close()
