"""The tuner's history: every window's metrics and settings, every decision with
its reason and evidence, and what each action's changes gained (the adaptive
strategy's memory).  One SQLite file beside the analytics store, shared by the
processes of a host; each row names its process."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .strategies import ActionStats

__all__ = ["ENV_PATH", "Decision", "TuningHistory", "default_history_path"]

ENV_PATH = "RAG_CACHE_TUNING_PATH"
DecisionKind = Literal["change", "recommend", "keep", "rollback"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    ts REAL NOT NULL, proc TEXT NOT NULL, window INTEGER NOT NULL,
    lookups INTEGER NOT NULL, metrics TEXT NOT NULL, config TEXT NOT NULL, shadow TEXT,
    PRIMARY KEY (proc, window)
);
CREATE INDEX IF NOT EXISTS windows_ts ON windows (ts);
CREATE TABLE IF NOT EXISTS decisions (
    ts REAL NOT NULL, proc TEXT NOT NULL, window INTEGER NOT NULL, kind TEXT NOT NULL,
    rule TEXT NOT NULL, action TEXT NOT NULL, knob TEXT NOT NULL, old TEXT, new TEXT,
    reason TEXT NOT NULL, target TEXT NOT NULL, before REAL, after REAL,
    dry_run INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
CREATE TABLE IF NOT EXISTS action_stats (
    action TEXT PRIMARY KEY, n INTEGER NOT NULL, gain REAL NOT NULL, scale REAL NOT NULL,
    updated REAL NOT NULL
);
"""


def default_history_path(analytics_path: str | os.PathLike[str] | None = None) -> Path | None:
    """``RAG_CACHE_TUNING_PATH``, else beside the analytics store: ``cache.analytics.db``
    -> ``cache.tuning.db`` (else ``<stem>.tuning.db``), else None (memory only)."""
    env = os.environ.get(ENV_PATH)
    if env:
        return Path(env)
    if analytics_path is None:
        return None
    p = Path(analytics_path)
    stem = p.name[:-len(".analytics.db")] if p.name.endswith(".analytics.db") else p.stem
    return p.with_name(f"{stem}.tuning.db")


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True, allow_nan=False, default=str)


@dataclass(frozen=True, slots=True)
class Decision:
    """A change made (or recommended, in dry-run mode) and how it was judged.

    ``kind``: "change" (applied), "recommend" (dry run), "keep" or "rollback" (the
    verdict after its evaluation windows).  ``target``: the metric it was judged by;
    ``before`` / ``after``: that metric's mean before the change and after it."""

    ts: float
    window: int
    kind: DecisionKind
    rule: str
    action: str
    knob: str
    old: Any
    new: Any
    reason: str
    target: str
    before: float | None = None
    after: float | None = None
    dry_run: bool = False
    proc: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TuningHistory:
    """Thread-safe; ``path=None`` keeps everything in memory (gone with the process)."""

    def __init__(self, path: str | os.PathLike[str] | None, *, timeout: float = 5.0) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:" if self.path is None else self.path,
                                   timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock up front: no upgrade deadlock
            try:
                self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writes -------------------------------------------------------------------------

    def write_window(self, ts: float, proc: str, window: int, lookups: int,
                     metrics: Mapping[str, Any], config: Mapping[str, Any],
                     shadow: Mapping[str, Any] | None = None) -> None:
        """``config``: the settings (and bounds) as the window closed, after any
        change it led to."""
        clean = {k: _finite(v) for k, v in metrics.items()}
        self._write("INSERT OR REPLACE INTO windows VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (ts, proc, window, lookups, _json(clean), _json(config),
                     None if shadow is None else _json(shadow)))

    def write_decision(self, d: Decision) -> None:
        self._write("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (d.ts, d.proc, d.window, d.kind, d.rule, d.action, d.knob, _json(d.old),
                     _json(d.new), d.reason, d.target, _finite(d.before), _finite(d.after),
                     int(d.dry_run)))

    def save_stats(self, action: str, s: ActionStats, ts: float) -> None:
        self._write("INSERT OR REPLACE INTO action_stats VALUES (?, ?, ?, ?, ?)",
                    (action, s.n, s.gain, s.scale, ts))

    # -- reads --------------------------------------------------------------------------

    def decisions(self, since: float | None = None, limit: int | None = None) -> list[Decision]:
        """Oldest first (the latest ``limit`` when given)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, window, kind, rule, action, knob, old, new, reason, target, "
                "before, after, dry_run, proc FROM decisions WHERE ts >= ? "
                "ORDER BY ts DESC, rowid DESC LIMIT ?",
                (since or float("-inf"), -1 if limit is None else limit)).fetchall()
        return [Decision(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]),
                         r[8], r[9], r[10], r[11], bool(r[12]), r[13]) for r in reversed(rows)]

    def windows(self, since: float | None = None, limit: int | None = None
                ) -> list[dict[str, Any]]:
        """Oldest first: ts, proc, window, lookups, metrics, config, shadow."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, proc, window, lookups, metrics, config, shadow FROM windows "
                "WHERE ts >= ? ORDER BY ts DESC, rowid DESC LIMIT ?",
                (since or float("-inf"), -1 if limit is None else limit)).fetchall()
        return [{"ts": r[0], "proc": r[1], "window": r[2], "lookups": r[3],
                 "metrics": json.loads(r[4]), "config": json.loads(r[5]),
                 "shadow": None if r[6] is None else json.loads(r[6])}
                for r in reversed(rows)]

    def load_stats(self) -> dict[str, ActionStats]:
        with self._lock:
            rows = self._db.execute("SELECT action, n, gain, scale FROM action_stats").fetchall()
        return {r[0]: ActionStats(int(r[1]), float(r[2]), float(r[3])) for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
