"""The snapshot store: one SQLite file holding the metric time series, alert
history and what each cached entry cost, shared by every process on a host.

Each process writes only its own rows (tagged with its process id), so writers
never conflict beyond SQLite's short write lock; readers merge.  WAL keeps readers
off the writers' backs; old rows go after ``retention`` seconds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .costs import EntryCost
from .metrics import MetricSnapshot

__all__ = ["ENV_PATH", "SnapshotStore", "default_store_path"]

ENV_PATH = "RAG_CACHE_ANALYTICS_PATH"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    ts REAL NOT NULL, proc TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    interval REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (proc, ts)
);
CREATE INDEX IF NOT EXISTS snapshots_ts ON snapshots (ts);
CREATE TABLE IF NOT EXISTS alerts (
    ts REAL NOT NULL, proc TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL,
    state TEXT NOT NULL, value REAL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);
CREATE TABLE IF NOT EXISTS entry_costs (
    key TEXT PRIMARY KEY, namespace TEXT NOT NULL, model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    latency REAL NOT NULL, cost REAL, updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entry_costs_updated ON entry_costs (updated);
"""


def default_store_path(sqlite_path: str | os.PathLike[str] | None = None) -> Path | None:
    """``RAG_CACHE_ANALYTICS_PATH``, else ``<L2 file stem>.analytics.db`` beside the L2
    file (given, or ``RAG_CACHE_SQLITE_PATH``), else None."""
    env = os.environ.get(ENV_PATH)
    if env:
        return Path(env)
    l2 = sqlite_path or os.environ.get("RAG_CACHE_SQLITE_PATH")
    if not l2:
        return None
    p = Path(l2)
    return p.with_name(f"{p.stem}.analytics.db")


class SnapshotStore:
    """Thread-safe (one connection, one lock): the background thread writes, any
    thread may read."""

    def __init__(self, path: str | os.PathLike[str], *, retention: float = 7 * 86400,
                 timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.retention = retention
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)  # idempotent: every process may run it

    def _tx(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> sqlite3.Connection:
                db.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlock
                return db

            def __exit__(self, exc_type: object, *rest: object) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")
        return _Tx()

    # -- writes ---------------------------------------------------------------------

    def write_snapshot(self, snap: MetricSnapshot) -> None:
        data = json.dumps(snap.to_dict(), separators=(",", ":"), allow_nan=False)
        with self._lock, self._tx() as db:
            db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
                       (snap.ts, snap.proc, snap.host, snap.pid, snap.interval, data))
            self._prune(db, snap.ts)

    def write_alert(self, ts: float, proc: str, rule: str, severity: str, state: str,
                    value: float | None, message: str) -> None:
        with self._lock, self._tx() as db:
            db.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (ts, proc, rule, severity, state, value, message))

    def write_costs(self, items: Iterable[tuple[str, str, EntryCost]]) -> None:
        rows = [(k, ns, c.model, c.input_tokens, c.output_tokens, c.latency, c.cost, time.time())
                for k, ns, c in items]
        if not rows:
            return
        with self._lock, self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO entry_costs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           rows)

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        horizon = now - self.retention
        db.execute("DELETE FROM snapshots WHERE ts < ?", (horizon,))
        db.execute("DELETE FROM alerts WHERE ts < ?", (horizon,))
        db.execute("DELETE FROM entry_costs WHERE updated < ?", (horizon,))

    # -- reads ----------------------------------------------------------------------

    def snapshots(self, since: float | None = None, until: float | None = None,
                  proc: str | None = None) -> list[MetricSnapshot]:
        """Stored snapshots, oldest first."""
        sql = "SELECT data FROM snapshots WHERE ts >= ? AND ts <= ?"
        args: list[Any] = [since if since is not None else 0.0,
                           until if until is not None else float("inf")]
        if proc is not None:
            sql += " AND proc = ?"
            args.append(proc)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY ts, proc", args).fetchall()
        return [MetricSnapshot.from_dict(json.loads(r[0])) for r in rows]

    def alerts(self, since: float | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, proc, rule, severity, state, value, message FROM alerts "
                "WHERE ts >= ? ORDER BY ts", (since or 0.0,)).fetchall()
        keys = ("ts", "proc", "rule", "severity", "state", "value", "message")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def costs(self, keys: Iterable[str]) -> dict[str, EntryCost]:
        wanted = list(keys)
        out: dict[str, EntryCost] = {}
        with self._lock:
            for i in range(0, len(wanted), 500):  # stay under SQLite's variable limit
                chunk = wanted[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                        "SELECT key, model, input_tokens, output_tokens, latency, cost "
                        f"FROM entry_costs WHERE key IN ({marks})", chunk):
                    out[row[0]] = EntryCost(*row[1:])
        return out

    def recent_costs(self, limit: int) -> dict[str, EntryCost]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, model, input_tokens, output_tokens, latency, cost FROM entry_costs "
                "ORDER BY updated DESC LIMIT ?", (limit,)).fetchall()
        return {r[0]: EntryCost(*r[1:]) for r in reversed(rows)}

    def close(self) -> None:
        with self._lock:
            self._db.close()
