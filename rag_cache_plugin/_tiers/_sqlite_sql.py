"""The L2 schema (the design: see ``sqlite``) and the statements ``SqliteTier`` runs."""

from __future__ import annotations

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
-- A replaced entry loses its old tags (the writer adds the new ones); a store of a
-- new key then runs no tag statement at all.
CREATE TRIGGER IF NOT EXISTS entries_retag AFTER UPDATE OF value ON entries BEGIN
    DELETE FROM tags WHERE key = OLD.key;
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


def _invalidation_sql(n: int) -> tuple[str, str, str]:
    """Select, delete and untag statements for ``n`` tags of one namespace."""
    tagged = f"SELECT key FROM tags WHERE ns = ? AND tag IN ({','.join('?' * n)})"
    return (
        f"SELECT key, ns, partition FROM entries WHERE key IN ({tagged})",
        f"DELETE FROM entries WHERE key IN ({tagged})",
        f"DELETE FROM tags WHERE ns = ? AND tag IN ({','.join('?' * n)})",
    )
