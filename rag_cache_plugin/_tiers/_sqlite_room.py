"""Keeping the L2 file within bounds (a base of ``SqliteTier``): the cull past
``max_bytes``, least recently used first, and room made when the file reaches a hard
limit (``max_page_count``, a full disk) before that."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from .._errors import TierError
from .._events import Evicted
from ._sqlite_file import _SqliteFile
from ._sqlite_sql import _DEL_KEY, _SIZE

_log = logging.getLogger("rag_cache_plugin")

_FULL_RETRIES = 3


def _is_full(exc: BaseException | None) -> bool:
    """SQLITE_FULL: the file reached ``max_page_count`` or the disk is full."""
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "database or disk is full" in str(exc)
    )


def _evict_lru(conn: sqlite3.Connection, goal: int, evicted: list[tuple[str, str]]) -> None:
    """Delete the least recently used entries until ``goal`` bytes are freed (or none
    are left), in batches; (namespace, key) of each goes to ``evicted``."""
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


class _SqliteRoom(_SqliteFile):
    """The cull and a full file's room (a base of ``SqliteTier``)."""

    max_bytes: int  # set by ``SqliteTier.__init__``

    def _cull_plan(self, size: int) -> int:
        """How many bytes to free: down to 90% of the bound once it is exceeded, so
        the cull runs rarely and in batches."""
        return size - int(self.max_bytes * 0.9) if size > self.max_bytes else 0

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

    def _cull(self, conn: sqlite3.Connection, now: float, excess: int) -> list[tuple[str, str]]:
        conn.execute("DELETE FROM entries WHERE expire_time <= ?", (now,))
        evicted: list[tuple[str, str]] = []
        _evict_lru(conn, self._cull_plan(conn.execute(_SIZE).fetchone()[0]), evicted)
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
            _evict_lru(conn, max(2 * need, total // 10), evicted)
        _log.warning("rag-cache: %s is full; evicted %d entries", self.path, len(evicted))
        self._report_evicted(evicted, "full")
        return True

    def _cull_now(self, now: float) -> None:
        with self._write() as conn:
            excess = self._cull_plan(conn.execute(_SIZE).fetchone()[0])
            evicted = self._cull(conn, now, excess) if excess else []
        self._report_evicted(evicted)
