"""A circuit breaker per tier: after repeated failures, stop calling for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker"]

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Closed -> (``threshold`` consecutive failures) -> open -> (``reset_timeout``)
    -> half-open: one probe call; success closes, failure re-opens."""

    __slots__ = ("_clock", "_failures", "_lock", "_on_change", "_opened_at", "_probing",
                 "reset_timeout", "state", "threshold")

    def __init__(
        self,
        threshold: int,
        reset_timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self.state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May a call go through now?"""
        if self.state == "closed":  # the hot path takes no lock
            return True
        with self._lock:
            if self.state == "open" and self._clock() - self._opened_at >= self.reset_timeout:
                self._set("half-open")
            if self.state == "half-open" and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        if self.state == "closed" and not self._failures:
            return
        with self._lock:
            self._failures = 0
            self._probing = False
            if self.state != "closed":
                self._set("closed")

    def release(self) -> None:
        """The call ``allow`` let through ended with neither success nor failure (it
        was cancelled): free the probe slot, or a half-open breaker would wait for
        that probe's verdict forever and the tier would never be used again."""
        if self._probing:
            with self._lock:
                self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self.state == "half-open" or (
                self.state == "closed" and self._failures >= self.threshold
            ):
                self._opened_at = self._clock()
                self._set("open")

    def _set(self, state: State) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)
