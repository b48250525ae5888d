"""L2 and L3 calls behind their circuit breakers (sync and async), promotion of a lower
tier's hit, and the repair queue: a write or removal that failed is retried (as a
removal) once the tier answers again, so an outage never lets a stale entry be served."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from time import perf_counter
from typing import Any

from ._core_base import _CacheBase
from ._entry import Entry
from ._events import TierFailed, TierName
from ._tiers import Ref, Tier

_log = logging.getLogger("rag_cache_plugin")

_REPLAY_MAX = 100_000  # deferred repairs kept during a long outage; the oldest go first


class _TierCalls(_CacheBase):
    """Tier calls and repairs (a base of ``RagCache``)."""

    # Set by ``RagCache.__init__``.
    _replay: deque[tuple[Tier, Callable[[], Any], str | None]]
    _replay_keys: set[tuple[str, str]]  # (tier, entry key) of queued repairs
    _replay_lock: threading.Lock

    # -- tier calls behind breakers (sync) ------------------------------------------

    def _repair_pending(self, tier: Tier, key: str) -> bool:
        """A write or removal of ``key`` failed in ``tier`` and awaits its repair: the
        tier may still hold an older version, so it must not answer for that key."""
        return bool(self._replay_keys) and (tier.name, key) in self._replay_keys

    def _tier_get(self, tier: Tier, ref: Ref, now: float) -> Entry | None:
        # Pending repair first: allow() may hand out the half-open probe, which must
        # then be used.
        if self._repair_pending(tier, ref.key) or not self.breakers[tier.name].allow():
            return None
        t = perf_counter()
        try:
            entry = tier.get(ref, now)
        except Exception as exc:  # never into the caller's chain
            self._failed(tier, "get", exc, ref.namespace, t)
            return None
        self.breakers[tier.name].success()
        return entry

    def _tier_call(self, tier: Tier, op: str, ns: str, fn: Callable[[], Any],
                   replay: Callable[[], Any] | None = None,
                   replay_key: str | None = None) -> Any:
        """Run a write-side tier call; None (and an event) when it fails.  A failed
        removal is kept in ``replay`` order and retried once the tier is back, so an
        outage never lets an invalidated entry come back from a shared tier.  A failed
        write replays as a removal of that key (``replay_key`` folds repeats): the tier
        may still hold an older version, which must not be served after the outage."""
        if not self.breakers[tier.name].allow():
            self._emit_if_active(TierFailed(ns, "", tier.name, op, "circuit open"))
            self._defer(tier, replay, replay_key)
            return None
        t = perf_counter()
        try:
            out = fn()
        except Exception as exc:
            self._failed(tier, op, exc, ns, t)
            self._defer(tier, replay, replay_key)
            return None
        self.breakers[tier.name].success()
        return True if out is None else out

    def _defer(self, tier: Tier, replay: Callable[[], Any] | None,
               key: str | None = None) -> None:
        if replay is None:
            return
        with self._replay_lock:
            if key is not None:
                if (tier.name, key) in self._replay_keys:
                    return
                self._replay_keys.add((tier.name, key))
            if len(self._replay) >= _REPLAY_MAX:
                # Memory stays bounded in a long outage; TTLs bound what this forgets.
                old_tier, _fn, old_key = self._replay.popleft()
                if old_key is not None:
                    self._replay_keys.discard((old_tier.name, old_key))
                _log.warning("rag-cache: more than %d repairs pending; dropped the oldest",
                             _REPLAY_MAX)
            self._replay.append((tier, replay, key))

    def _maintain(self) -> None:
        """The news thread's chores each round: retry removals, checkpoint the L2 WAL."""
        self._replay_removals()
        if self.l2 is not None:
            try:
                self.l2.checkpoint()
            except Exception as exc:  # a later round (or SQLite itself) tries again
                _log.debug("rag-cache: L2 checkpoint failed: %s", exc)

    def _replay_removals(self) -> None:
        """Retry removals that failed during an outage (the news thread calls this)."""
        while self._replay:
            with self._replay_lock:
                tier, fn, _key = self._replay[0]
            if not self.breakers[tier.name].allow():
                return
            try:
                fn()
            except Exception:
                self.breakers[tier.name].failure()
                return
            self.breakers[tier.name].success()
            with self._replay_lock:
                if self._replay and self._replay[0][1] is fn:
                    _t, _f, key = self._replay.popleft()
                    if key is not None:
                        self._replay_keys.discard((tier.name, key))

    def _promote(self, entry: Entry, source: TierName, now: float) -> None:
        # newer_only / replace=False: a concurrent store of a newer version wins.
        if "l1" in self.promote_to:
            self.l1.set(entry, now, newer_only=True)
        if source == "l3" and self.l2 is not None and "l2" in self.promote_to:
            self._tier_call(self.l2, "promote", entry.namespace,
                            partial(self.l2.set, entry, now, replace=False))

    # -- tier calls behind breakers (async) ---------------------------------------

    async def _atier_get(self, tier: Tier, ref: Ref, now: float) -> Entry | None:
        # Pending repair first: allow() may hand out the half-open probe, which must
        # then be used.
        if self._repair_pending(tier, ref.key) or not self.breakers[tier.name].allow():
            return None
        t = perf_counter()
        try:
            entry = await tier.aget(ref, now)
        except Exception as exc:
            self._failed(tier, "get", exc, ref.namespace, t)
            return None
        except BaseException:  # cancelled (an application timeout): free the probe
            self.breakers[tier.name].release()
            raise
        self.breakers[tier.name].success()
        return entry

    async def _atier_call(self, tier: Tier, op: str, ns: str, coro_fn: Callable[[], Any],
                          replay: Callable[[], Any] | None = None,
                          replay_key: str | None = None) -> Any:
        if not self.breakers[tier.name].allow():
            self._emit_if_active(TierFailed(ns, "", tier.name, op, "circuit open"))
            self._defer(tier, replay, replay_key)
            return None
        t = perf_counter()
        try:
            out = await coro_fn()
        except Exception as exc:
            self._failed(tier, op, exc, ns, t)
            self._defer(tier, replay, replay_key)
            return None
        except BaseException:  # cancelled: free the probe; the write may not have landed
            self.breakers[tier.name].release()
            self._defer(tier, replay, replay_key)
            raise
        self.breakers[tier.name].success()
        return True if out is None else out

    async def _apromote(self, entry: Entry, source: TierName, now: float) -> None:
        if "l1" in self.promote_to:
            self.l1.set(entry, now, newer_only=True)
        if source == "l3" and self.l2 is not None and "l2" in self.promote_to:
            l2 = self.l2
            await self._atier_call(l2, "promote", entry.namespace,
                                   partial(l2.aset, entry, now, replace=False))
