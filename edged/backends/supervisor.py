"""The supervisor: restarts a backend whose decode is stuck past its deadline.

It reads each backend's ``stats().stuck`` once a period and calls ``restart()`` on one that
says why, at most ``restarts_per_minute`` a minute over all backends; past that it gives up
and sets :attr:`Supervisor.problem` (the backend stays unhealthy, so the router avoids it;
the watchdog reports the problem, and systemd restarts the service).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from edged.backends.base import Backend

log = logging.getLogger("edged.supervisor")

RESTARTS_PER_MINUTE = 5


class Supervisor:
    """Watches the backends for stuck decodes."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        restarts_per_minute: int = RESTARTS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backends = backends
        self.restarts_per_minute = restarts_per_minute
        self._clock = clock
        self._restarts: list[float] = []
        #: Set when a backend was stuck and restarted too often (the watchdog's liveness).
        self.problem: str | None = None

    async def run(self, period_s: float = 1.0) -> None:
        """Check every ``period_s`` until cancelled."""
        while True:
            await asyncio.sleep(period_s)
            await self.check()

    async def check(self) -> None:
        """One round: restart each backend that is stuck, within the rate limit."""
        for name, backend in self.backends.items():
            why = backend.stats().stuck
            if why is None:
                continue
            now = self._clock()
            self._restarts[:] = [t for t in self._restarts if now - t < 60]
            if len(self._restarts) >= self.restarts_per_minute:
                self.problem = f"backend {name} stuck and restarted too often: {why}"
                log.error("event=backend_stuck_gave_up backend=%s reason=%r", name, why)
                continue
            self._restarts.append(now)
            log.error("event=backend_stuck_restarting backend=%s reason=%r", name, why)
            try:
                await backend.restart()
            except Exception as e:
                log.error("event=backend_restart_failed backend=%s error=%r", name, str(e))
            else:
                log.info("event=backend_restarted backend=%s", name)
