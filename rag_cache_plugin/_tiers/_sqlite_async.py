"""The async twins of ``SqliteTier``'s operations (a base of ``SqliteTier``).

Reads on the async path run inline: a WAL read of one row costs microseconds,
less than the thread hop aiosqlite would add.  Writes on the async path go
through aiosqlite so a busy wait never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import aiosqlite

from .._entry import Entry
from .._errors import TierError
from . import Ref
from ._sqlite_file import _RECHECK, _is_corruption
from ._sqlite_room import _FULL_RETRIES, _is_full, _SqliteRoom
from ._sqlite_sql import (
    _ADD_TAG,
    _DEL_EXPIRED,
    _DEL_KEY,
    _SIZE,
    _TOUCH,
    _UPSERT,
    _invalidation_sql,
)


class _SqliteAsync(_SqliteRoom):
    """``aget``, ``aset``, ``aclose`` and the rest (a base of ``SqliteTier``)."""

    # Set by ``SqliteTier.__init__``.
    _async: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, tuple[aiosqlite.Connection, asyncio.Lock]
    ]
    _async_gen: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int]

    if TYPE_CHECKING:  # SqliteTier's sync operations, which some twins run
        def get(self, ref: Ref, now: float) -> Entry | None: ...
        def get_many(self, refs: Sequence[Ref], now: float) -> dict[str, Entry]: ...
        def set(self, entry: Entry, now: float, *, replace: bool = True) -> None: ...
        def _take_pending(
            self, now: float
        ) -> tuple[list[tuple[float, str]], list[tuple[str, float]]]: ...
        def close(self) -> None: ...

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
