"""News between processes sharing L2 or L3: invalidations, clears, new entries.

Each process keeps its L1 and its semantic index current from this feed.  A
background thread sends what this process published (batched, so a store never
waits for it) and polls the shared tiers for what peers published.  Messages
from this process (same ``origin``) are ignored on the way back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from ._codec import loads

__all__ = ["NewsFeed", "NewsSource", "RedisNews", "SqliteNews"]

_log = logging.getLogger("rag_cache_plugin")

_REPLAY = 2.0  # seconds of a stream's history a new watcher reads

Handler = Callable[[str, list[tuple[str, str, dict[str, Any]]]], None]
"""(source tier, [(namespace, kind, body), ...]) -> None"""


class NewsSource(Protocol):
    """A shared tier that carries news."""

    name: str

    def send(self, messages: list[tuple[str, str, str, str]]) -> None: ...
    def poll(self) -> list[tuple[str, str, str, str]]: ...
    def watch(self, namespace: str) -> None: ...


class SqliteNews:
    """News through the L2 file's ``news`` table (peers on the same host)."""

    name = "l2"

    def __init__(self, tier: Any) -> None:
        self._tier = tier
        self._after: int | None = None

    def send(self, messages: list[tuple[str, str, str, str]]) -> None:
        self._tier.publish_many(messages)

    def poll(self) -> list[tuple[str, str, str, str]]:
        if self._after is None:
            self._after = self._tier.last_news()
            return []
        rows = self._tier.read_news(self._after)
        if rows:
            self._after = rows[-1][0]
        return [(origin, ns, kind, body) for _seq, origin, ns, kind, body in rows]

    def watch(self, namespace: str) -> None:
        if self._after is None:
            with contextlib.suppress(Exception):  # poll() retries
                self._after = self._tier.last_news()


class RedisNews:
    """News through one Redis Stream per namespace (peers on every host)."""

    name = "l3"

    def __init__(self, tier: Any) -> None:
        self._tier = tier
        self._after: dict[str, str] = {}

    def send(self, messages: list[tuple[str, str, str, str]]) -> None:
        self._tier.publish_many(messages)

    def watch(self, namespace: str) -> None:
        # Stream ids are millisecond timestamps: start a little before now, so news
        # published while the watcher starts up is not lost.  Re-reading a few older
        # messages is harmless: applying news is idempotent.
        self._after.setdefault(namespace, f"{int((time.time() - _REPLAY) * 1000)}-0")

    def poll(self) -> list[tuple[str, str, str, str]]:
        out: list[tuple[str, str, str, str]] = []
        for ns, after in list(self._after.items()):
            items = self._tier.read_news(ns, after)
            if items:
                self._after[ns] = items[-1][0]
                out.extend((origin, ns, kind, body) for _id, origin, kind, body in items)
        return out


class NewsFeed:
    """Publishes this process's changes and applies peers' through ``handler``."""

    def __init__(
        self,
        origin: str,
        sources: list[NewsSource],
        handler: Handler,
        *,
        interval: float,
        on_error: Callable[[str, Exception], None] | None = None,
        gate: Callable[[str], bool] | None = None,
        on_cycle: Callable[[], None] | None = None,
        on_ok: Callable[[str], None] | None = None,
    ) -> None:
        self.origin = origin
        self._sources = sources
        self._handler = handler
        self._interval = interval
        self._on_error = on_error
        self._gate = gate  # e.g. a circuit breaker: skip a tier that is known down
        self._on_cycle = on_cycle
        self._on_ok = on_ok  # a gate that let a call through learns it worked
        self._outbox: list[tuple[str, str, str, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self._sources:
            self._thread = threading.Thread(target=self._run, name="rag-cache-news", daemon=True)
            self._thread.start()

    def watch(self, namespace: str) -> None:
        for s in self._sources:
            s.watch(namespace)

    def publish(self, namespace: str, kind: str, body: dict[str, Any]) -> None:
        if not self._sources:
            return
        try:
            text = orjson.dumps(body).decode()
        except (orjson.JSONEncodeError, TypeError):  # a lone surrogate, say
            text = json.dumps(body, separators=(",", ":"))
        msg = (self.origin, namespace, kind, text)
        with self._lock:
            self._outbox.append(msg)
        self._idle.clear()
        if kind != "put":
            # Removals go out at once.  A store's news waits for the next round: peers
            # only read it on their own next poll, and waking the feed thread for every
            # store would contend with the stores for the L2 write lock and the GIL.
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything published so far was sent (tests and close use it)."""
        if self._thread is None:
            return True
        self._wake.set()
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.cycle()

    def cycle(self) -> None:
        """Send the outbox, then apply what peers sent (one round)."""
        if self._on_cycle is not None:
            try:
                self._on_cycle()
            except Exception:
                _log.exception("rag-cache: maintenance step failed")
        with self._lock:
            out, self._outbox = self._outbox, []
        for source in self._sources:
            if self._gate is not None and not self._gate(source.name):
                continue  # its messages are dropped; peers' L1 age limit bounds staleness
            if out:
                try:
                    source.send(out)
                except Exception as exc:  # the feed thread must outlive any failure
                    self._report(source.name, exc)
                    continue
            try:
                news = source.poll()
            except Exception as exc:
                self._report(source.name, exc)
                continue
            if self._on_ok is not None:
                self._on_ok(source.name)
            batch: list[tuple[str, str, dict[str, Any]]] = []
            for origin, ns, kind, body in news:
                if origin == self.origin:
                    continue
                try:
                    doc = loads(body)
                except ValueError:
                    _log.warning("rag-cache: unreadable news message %r", kind)
                    continue
                if isinstance(doc, dict):
                    batch.append((ns, kind, doc))
            if batch:
                try:
                    self._handler(source.name, batch)
                except Exception:  # one bad batch must not stop the feed
                    _log.exception("rag-cache: applying news from %s failed", source.name)
        with self._lock:
            if not self._outbox:
                self._idle.set()

    def _report(self, source: str, exc: Exception) -> None:
        if self._on_error is not None:
            self._on_error(source, exc)

    def stop(self) -> None:
        self.flush(timeout=1.0)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
