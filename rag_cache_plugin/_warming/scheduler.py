"""Periodic warming in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .stats import WarmingReport

if TYPE_CHECKING:
    from .._core import RagCache

__all__ = ["WarmingSchedule", "release_loop"]

_log = logging.getLogger("rag_cache_plugin.warming")


async def release_loop(cache: RagCache) -> None:
    """Close the tiers' async connections made for the running loop, and only those:
    ``RagCache.aclose`` would close the whole cache, which the application still uses."""
    loop = asyncio.get_running_loop()
    l3: Any = cache.l3
    client = None if l3 is None else l3._async.pop(loop, None)
    if client is not None:
        await client.aclose()
    l2: Any = cache.l2
    pair = None if l2 is None else l2._async.pop(loop, None)
    if pair is not None:
        await pair[0].close()


class WarmingSchedule:
    """Runs ``job()`` every ``interval`` seconds (the first after ``first_delay``) until
    ``stop()``.  A failed run is logged and the next one still comes.  ``stop()``
    cancels a run in progress (its keys' locks are released and it is recorded as
    cancelled), closes the loop's connections and joins the thread."""

    def __init__(self, job: Callable[[], Coroutine[Any, Any, WarmingReport]], interval: float, *,
                 first_delay: float = 0.0,
                 cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.first_delay = first_delay
        self.runs = 0
        self.errors = 0
        self.last_report: WarmingReport | None = None
        self.last_error: BaseException | None = None
        self._job = job
        self._cleanup = cleanup
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._current: asyncio.Task[WarmingReport] | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name="rag-cache-warming",
                                        daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        finally:
            try:
                if self._cleanup is not None:
                    loop.run_until_complete(self._cleanup())
            except Exception:
                _log.debug("rag-cache warming: closing the scheduler's connections failed",
                           exc_info=True)
            loop.close()
            with self._cond:
                self._cond.notify_all()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._started.set()
        delay = self.first_delay
        while not self._stopping:
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return
            except TimeoutError:
                pass
            self._current = asyncio.get_running_loop().create_task(self._job())
            try:
                report = await self._current
            except asyncio.CancelledError:
                return
            except Exception as exc:
                self.errors += 1
                self.last_error = exc
                _log.exception("rag-cache warming: a scheduled run failed")
            else:
                self.last_report = report
            finally:
                self._current = None
            with self._cond:
                self.runs += 1
                self._cond.notify_all()
            delay = self.interval

    def _request_stop(self) -> None:
        self._stopping = True
        if self._stop is not None:
            self._stop.set()
        if self._current is not None:
            self._current.cancel()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop; True when the thread ended within ``timeout`` seconds."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._request_stop)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_for_runs(self, n: int, timeout: float = 30.0) -> bool:
        """Block until ``n`` runs finished (or the schedule stopped)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.runs >= n or not self.running, timeout)
