"""The query log in SQLite: questions asked, warming runs, and the entries warming
wrote (with the hits they served), shared by the processes of one host.

Writers merge deltas inside ``BEGIN IMMEDIATE`` so two processes flushing at once
never lose each other's counts.  The file defaults to ``<L2 stem>.warming.db``
beside the L2 file; without one the log lives in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .rows import Row, decayed, merge

__all__ = ["ENV_PATH", "QueryLog", "default_log_path"]

ENV_PATH = "RAG_CACHE_WARMING_PATH"
_FIELDS = [f.name for f in dataclasses.fields(Row) if f.name != "first_digest"]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS queries (
    {", ".join(f + (" TEXT PRIMARY KEY" if f == "key" else "") for f in _FIELDS)}
);
CREATE INDEX IF NOT EXISTS queries_ns ON queries (namespace);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, started REAL NOT NULL, finished REAL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS warmed (
    key TEXT PRIMARY KEY, namespace TEXT NOT NULL, run_id TEXT NOT NULL,
    warmed_at REAL NOT NULL, cost REAL NOT NULL, latency REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 1, hits INTEGER NOT NULL DEFAULT 0,
    saved_cost REAL NOT NULL DEFAULT 0, saved_latency REAL NOT NULL DEFAULT 0
);
"""
_INSERT = (f"INSERT OR REPLACE INTO queries ({', '.join(_FIELDS)}) "
           f"VALUES ({', '.join('?' * len(_FIELDS))})")


def default_log_path(sqlite_path: str | os.PathLike[str] | None = None) -> Path | None:
    """``RAG_CACHE_WARMING_PATH``, else ``<L2 stem>.warming.db`` beside the L2 file."""
    env = os.environ.get(ENV_PATH)
    if env:
        return Path(env)
    l2 = sqlite_path or os.environ.get("RAG_CACHE_SQLITE_PATH")
    if not l2:
        return None
    p = Path(l2)
    return p.with_name(f"{p.stem}.warming.db")


def _row(values: Iterable[Any]) -> Row:
    data = dict(zip(_FIELDS, values, strict=True))
    if data["cached"] is not None:
        data["cached"] = bool(data["cached"])
    return Row(**data)


class QueryLog:
    """Thread-safe: one connection behind one lock."""

    def __init__(self, path: str | os.PathLike[str] | None, *, timeout: float = 10.0) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(":memory:" if self.path is None else str(self.path),
                                     timeout=timeout, isolation_level=None,
                                     check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            if self.path is not None:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- queries ------------------------------------------------------------------------

    def merge(self, deltas: Iterable[Row], half_life: float) -> None:
        items = list(deltas)
        if not items:
            return
        with self._write() as conn:
            stored: dict[str, Row] = {}
            for i in range(0, len(items), 500):
                keys = [d.key for d in items[i:i + 500]]
                sql = (f"SELECT {', '.join(_FIELDS)} FROM queries WHERE key IN "
                       f"({','.join('?' * len(keys))})")
                stored.update((r.key, r) for r in map(_row, conn.execute(sql, keys)))
            out = [merge(stored.get(d.key), d, half_life) for d in items]
            conn.executemany(_INSERT, [[getattr(r, f) for f in _FIELDS] for r in out])

    def rows(self, namespace: str | None = None) -> list[Row]:
        sql = f"SELECT {', '.join(_FIELDS)} FROM queries"
        args: tuple[str, ...] = ()
        if namespace is not None:
            sql, args = sql + " WHERE namespace = ?", (namespace,)
        with self._lock:
            return [_row(r) for r in self._conn.execute(sql, args)]

    def mark_uncached(self, keys: Iterable[str] = (), namespaces: Iterable[str | None] = ()
                      ) -> None:
        """Entries that expired or were cleared (a namespace, or None for all)."""
        keys, namespaces = list(keys), list(namespaces)
        if not keys and not namespaces:
            return
        with self._write() as conn:
            conn.executemany("UPDATE queries SET cached = 0 WHERE key = ?", [(k,) for k in keys])
            for ns in namespaces:
                if ns is None:
                    conn.execute("UPDATE queries SET cached = 0")
                else:
                    conn.execute("UPDATE queries SET cached = 0 WHERE namespace = ?", (ns,))

    def prune(self, max_rows: int, now: float, half_life: float) -> int:
        """Keep the ``max_rows`` heaviest rows; returns how many went."""
        with self._lock:
            (n,) = self._conn.execute("SELECT COUNT(*) FROM queries").fetchone()
        if n <= max_rows:
            return 0
        with self._write() as conn:
            rows = conn.execute("SELECT key, weight, weight_at FROM queries").fetchall()
            rows.sort(key=lambda r: decayed(r[1], r[2], now, half_life))
            gone = [(r[0],) for r in rows[: len(rows) - max_rows]]
            conn.executemany("DELETE FROM queries WHERE key = ?", gone)
        return len(gone)

    # -- runs ---------------------------------------------------------------------------

    def add_run(self, run_id: str, started: float, finished: float | None,
                data: Mapping[str, Any]) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
                         (run_id, started, finished, json.dumps(data, default=str)))

    def runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs, oldest first (the last ``limit``)."""
        sql = "SELECT data FROM runs ORDER BY started DESC, rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            out = [json.loads(r[0]) for r in self._conn.execute(sql)]
        return out[::-1]

    # -- warmed entries and their hits ----------------------------------------------------

    def mark_warmed(self, items: Iterable[tuple[str, str, str, float, float, float]]) -> None:
        """(key, namespace, run id, warmed at, cost, latency) per warmed entry."""
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO warmed (key, namespace, run_id, warmed_at, cost, latency) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "namespace = excluded.namespace, run_id = excluded.run_id, "
                "warmed_at = excluded.warmed_at, cost = excluded.cost, "
                "latency = excluded.latency, active = 1", list(items))

    def deactivate(self, keys: Iterable[str]) -> None:
        """These entries were replaced by answers computed for users."""
        with self._write() as conn:
            conn.executemany("UPDATE warmed SET active = 0 WHERE key = ?", [(k,) for k in keys])

    def add_hits(self, counts: Mapping[str, int]) -> None:
        """Hits served by warmed entries: each saved what computing its entry cost."""
        if not counts:
            return
        with self._write() as conn:
            for key, n in counts.items():
                row = conn.execute("SELECT cost, latency FROM warmed WHERE key = ?",
                                   (key,)).fetchone()
                if row is None:
                    continue
                conn.execute("UPDATE warmed SET hits = hits + ?, saved_cost = saved_cost + ?, "
                             "saved_latency = saved_latency + ? WHERE key = ?",
                             (n, n * row[0], n * row[1], key))

    def warmed_active(self) -> dict[str, float]:
        """Active warmed keys -> when they were warmed."""
        with self._lock:
            return dict(self._conn.execute("SELECT key, warmed_at FROM warmed WHERE active = 1"))

    def hit_totals(self) -> tuple[int, float, float]:
        """(hits on warmed entries, cost saved, model latency saved)."""
        with self._lock:
            row = self._conn.execute("SELECT TOTAL(hits), TOTAL(saved_cost), "
                                     "TOTAL(saved_latency) FROM warmed").fetchone()
        return int(row[0]), float(row[1]), float(row[2])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
