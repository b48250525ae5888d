"""News: what this cache tells peers, the semantic layer and listeners after a change,
and what it does with peers' changes (this process's L1 and semantic index, and, for
news that came through Redis, this host's L2 file)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from time import perf_counter
from typing import Any

from ._codec import value_digest
from ._core_tiers import _TierCalls
from ._entry import Entry
from ._events import Cleared, Invalidated, Stored, TierFailed, TierName

_ALL = "*"  # news namespace for clears of every namespace


class _PeerNews(_TierCalls):
    """Publishing and applying news (a base of ``RagCache``)."""

    # -- telling others -----------------------------------------------------------

    def _stored(self, entry: Entry, done: list[TierName], started: float) -> None:
        body: dict[str, Any] = {"key": entry.key, "at": entry.created}
        if self.semantic is not None:
            self.semantic.added(entry)
            body.update(self.semantic.news_fields(entry))  # peers index it without a read
        self.news.publish(entry.namespace, "put", body)
        if self.bus.active:
            self._emit(Stored(entry.namespace, entry.key, tuple(done), entry.size,
                              perf_counter() - started, entry.question, entry.partition,
                              entry.expires, value_digest(entry.value)))

    def _removed(self, ns: str, keys: list[str], tags: tuple[str, ...], kind: str,
                 partitions: Mapping[str, str] | None = None) -> None:
        if self.semantic is not None:
            self.semantic.removed(keys, ns, partitions)
        self.news.publish(ns, kind, {"keys": keys, "tags": list(tags)})
        if kind == "inv":
            self._emit_if_active(Invalidated(ns, "", tags, len(keys)))

    def _cleared(self, namespace: str | None) -> None:
        if self.semantic is not None:
            self.semantic.cleared(namespace)
        self.news.publish(_ALL if namespace is None else namespace, "clear",
                          {"ns": namespace})
        self._emit_if_active(Cleared(namespace or "", ""))

    # -- news from peers ----------------------------------------------------------

    def _news_ok(self, tier: str) -> None:
        b = self.breakers.get(tier)
        if b is not None:
            b.success()

    def _news_failed(self, tier: str, exc: Exception) -> None:
        b = self.breakers.get(tier)
        if b is not None:
            b.failure()
        self._emit_if_active(TierFailed("", "", tier, "news", str(exc)))  # type: ignore[arg-type]

    def _on_news(self, source: str, batch: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Apply peers' changes to this process's L1 and semantic index, and, when
        the news came through Redis, to this host's own L2 file (a peer on another
        host has another file; the same file's news arrives through L2 and needs
        nothing)."""
        l2_removals: list[tuple[str, float | None]] = []
        l2_invalidations: list[tuple[str, list[str]]] = []
        l2_clears: list[str | None] = []
        for ns, kind, body in batch:
            if kind in ("put", "del", "inv"):
                keys = [k for k in body.get("keys") or [body.get("key")] if isinstance(k, str)]
                self.l1.discard(keys)
                tags = [t for t in body.get("tags") or [] if isinstance(t, str)]
                if kind == "inv":
                    self.l1.invalidate(ns, tags)
                    l2_invalidations.append((ns, tags))
                if kind != "put" and self.semantic is not None:
                    self.semantic.removed(keys)
                # A peer's newer answer replaces only older copies here.
                at = body.get("at") if kind == "put" else None
                l2_removals.extend((k, at if isinstance(at, int | float) else None) for k in keys)
            elif kind == "clear":
                target = body.get("ns")
                self.l1.clear(target)
                l2_clears.append(target)
                if self.semantic is not None:
                    self.semantic.cleared(target)
            if self.semantic is not None and hasattr(self.semantic, "on_news"):
                self.semantic.on_news(ns, kind, body)
        if source == "l3" and self.l2 is not None and (l2_removals or l2_invalidations
                                                      or l2_clears):
            l2 = self.l2
            self._tier_call(l2, "news", "", partial(
                l2.apply_peer_news, l2_removals, l2_invalidations, l2_clears))
