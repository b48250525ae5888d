"""The L2 file and the connections to it (the base of ``SqliteTier``): opened with its
schema, a damaged file moved aside and replaced, a file replaced or deleted under us
followed, sqlite errors turned into ``TierError``."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._errors import TierError
from .._events import Corrupt
from . import Emit
from ._sqlite_sql import _SCHEMA

_log = logging.getLogger("rag_cache_plugin")

_CORRUPTION_MARKERS = ("malformed", "not a database", "file is encrypted", "disk image")
_RECHECK = 1.0  # seconds between checks that the path still names the file we use
# The news thread checkpoints the WAL every round (``checkpoint``), so a store rarely
# pays for one; the automatic checkpoint stays only as a bound on the WAL's size.
_AUTOCHECKPOINT_PAGES = 10_000


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(
        m in str(exc).lower() for m in _CORRUPTION_MARKERS
    )


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def _writer_lock(path: Path) -> threading.Lock:
    """One lock per file for the write transactions of this process's threads."""
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(str(path.resolve()), threading.Lock())


class _SqliteFile:
    """Connections to a file that may be replaced under them (a base of ``SqliteTier``)."""

    # Set by ``SqliteTier.__init__``.
    path: Path
    _rw_uri: str
    _pragmas: dict[str, int | str]
    _timeout: float
    _emit: Emit | None
    _local: threading.local
    _conns: list[sqlite3.Connection]
    _conns_lock: threading.Lock
    _generation: int
    _file: tuple[int, int] | None
    _checked: float
    _replace_lock: threading.RLock
    _writer: threading.Lock
    _closed: bool

    # -- connections --------------------------------------------------------------

    def _pragma_sql(self) -> list[str]:
        # Names and values were checked by CacheConfig (words and integers only).
        return [f"PRAGMA busy_timeout = {int(self._timeout * 1000)}",
                "PRAGMA synchronous = NORMAL",
                f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}",
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

    def checkpoint(self) -> None:
        """Copy the WAL into the file without waiting for readers or writers (its
        fsync then happens here, in the background, rather than in a store)."""
        with self._guard():
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._guard():
            conn = self._conn()
            # Threads of one process queue on a lock, woken the moment it is free:
            # SQLite's busy handler would sleep a millisecond or more per retry.
            # Other processes still meet the busy handler.
            if not self._writer.acquire(timeout=self._timeout):
                raise TierError("L2: another thread held the write lock too long")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                self._writer.release()
