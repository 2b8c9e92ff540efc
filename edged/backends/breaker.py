"""The cloud's circuit breaker: stops sending requests to a server that keeps failing.

Pure logic (no I/O, the clock injected); :class:`~edged.backends.cloud.CloudBackend`
reports each admitted request's verdict to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edged.types import BreakerState

__all__ = ["Breaker", "BreakerState"]


class Breaker:
    """A circuit breaker over whole requests. Pure logic: no I/O, the clock is injected.

    - ``closed``: requests go through; ``failures`` consecutive failed requests open it.
    - ``open``: nothing goes through for ``cooldown_s``; then it is ``half_open``.
    - ``half_open``: exactly one trial request is admitted. Its success closes the breaker,
      its failure opens it again for a fresh cooldown.

    Two questions, on purpose:

    - :meth:`allow_check` -- "would a request be admitted now?" -- changes nothing. This is
      what the router asks (``CloudBackend.healthy()``); asking it any number of times never
      uses up the half-open trial.
    - :meth:`allow` -- "admit this request" -- takes the permission: in ``half_open`` the
      first call gets the trial and every later call is refused until the trial reports.

    Every admitted request must report exactly once: :meth:`record_success`,
    :meth:`record_failure`, or :meth:`release` (ended without a verdict, e.g. cancelled
    before the server answered; a half-open trial becomes available again).
    """

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    def _tick(self) -> None:
        """Let time pass: an open breaker whose cooldown is over becomes half-open."""
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = "half_open"
            self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open`` (for telemetry)."""
        self._tick()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failed requests in a row since the last success."""
        return self._consecutive

    def allow_check(self) -> bool:
        """Would a request be admitted now? Consumes nothing (the router's question)."""
        self._tick()
        if self._state == "closed":
            return True
        if self._state == "half_open":
            return not self._trial_in_flight
        return False

    def allow(self) -> bool:
        """Admit a request now, or refuse it. In half-open state only the first caller (the
        trial) is admitted until that trial reports."""
        self._tick()
        if self._state == "closed":
            return True
        if self._state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """An admitted request succeeded: the breaker closes and the count starts over."""
        self._tick()
        self._state = "closed"
        self._consecutive = 0
        self._trial_in_flight = False

    def record_failure(self) -> None:
        """An admitted request failed."""
        self._tick()
        self._consecutive += 1
        if self._state == "half_open":
            if self._trial_in_flight:  # the trial failed: open again, fresh cooldown
                self._open()
            # else: a request admitted before the breaker opened reports late; the trial
            # (not yet sent) decides.
        elif self._state == "closed" and self._consecutive >= self.failures:
            self._open()
        # open: a late report from before it opened; the cooldown is not extended

    def release(self) -> None:
        """An admitted request ended without a verdict (cancelled, or the request itself
        was at fault). A half-open trial becomes available again."""
        if self._state == "half_open":
            self._trial_in_flight = False

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._trial_in_flight = False
