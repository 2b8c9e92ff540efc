"""Restart delays for a model worker that keeps dying (:mod:`.process`)."""

from __future__ import annotations


class Backoff:
    """Restart delays that grow while a worker keeps dying young, and start again from the
    first step once a worker has run ``healthy_s``. Times are ``time.monotonic()`` seconds."""

    def __init__(self, steps_s: tuple[float, ...], healthy_s: float) -> None:
        self.steps_s = steps_s
        self.healthy_s = healthy_s
        self.failures = 0  # deaths (and failed restarts) since the last healthy run
        self._up_since_s: float | None = None

    def up(self, now_s: float) -> None:
        """A worker is running (its model loaded)."""
        self._up_since_s = now_s

    def died(self, now_s: float) -> float:
        """The worker died (or a restart failed): the delay before the next start, seconds."""
        if self._up_since_s is not None and now_s - self._up_since_s >= self.healthy_s:
            self.failures = 0
        self._up_since_s = None
        delay = self.steps_s[min(self.failures, len(self.steps_s) - 1)]
        self.failures += 1
        return delay
