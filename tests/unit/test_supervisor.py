"""The supervisor restarts a stuck backend, at most so often a minute, then gives up.

The backend is a test double on purpose: a llama.cpp decode that never returns cannot be
produced on demand; the real stuck path (a worker killed) is in tests/integration.
"""

from __future__ import annotations

import asyncio

from edged.backends.fake import FakeBackend
from edged.backends.supervisor import Supervisor
from edged.telemetry.stats import alarms
from edged.types import BackendStats


class Stuck(FakeBackend):
    def __init__(self) -> None:
        super().__init__(name="local")
        self.restarts = 0
        self.why: str | None = "decode job running 99 s, past its deadline"

    def stats(self) -> BackendStats:
        return BackendStats(queue_depth=1, stuck=self.why)

    async def restart(self) -> None:
        self.restarts += 1


def test_a_stuck_backend_is_restarted_until_the_limit_then_reported() -> None:
    now = [0.0]
    stuck, fine = Stuck(), FakeBackend(name="cloud")
    sup = Supervisor({"local": stuck, "cloud": fine}, restarts_per_minute=3, clock=lambda: now[0])

    async def rounds(n: int) -> None:
        for _ in range(n):
            await sup.check()
            now[0] += 1.0

    asyncio.run(rounds(3))
    assert stuck.restarts == 3 and sup.problem is None
    asyncio.run(rounds(1))  # a fourth within the minute: given up
    assert stuck.restarts == 3
    assert sup.problem is not None and "local" in sup.problem
    now[0] += 60.0  # a minute later it may restart again
    asyncio.run(rounds(1))
    assert stuck.restarts == 4


def test_a_backend_that_is_not_stuck_is_left_alone() -> None:
    stuck = Stuck()
    stuck.why = None
    sup = Supervisor({"local": stuck})
    asyncio.run(sup.check())
    assert stuck.restarts == 0 and sup.problem is None


def test_cloud_alarms_come_from_its_stats() -> None:
    assert alarms(outbox=None, sampler=None, cloud=None) == []
    assert alarms(outbox=None, sampler=None, cloud=BackendStats(breaker="closed")) == []
    assert alarms(
        outbox=None, sampler=None, cloud=BackendStats(breaker="open", retry_after_s=2.5)
    ) == ["cloud_breaker_open", "cloud_throttled"]
