"""Model residency: a device model that loads on demand and unloads after ``keep_alive_s``
idle, within a device-wide ``max_resident_mb`` and what ``MemAvailable`` says is free.

On a Jetson the CPU and GPU share memory, so a load that does not fit kills the board, not
just edged: before every load :func:`plan_load` (pure) decides to load, to evict idle models
first, or to refuse with a reason; a refusal is a ``BackendFailed`` before the first token,
so the router's fallback takes the request elsewhere.

:class:`Resident` wraps a backend factory: unloading closes the backend and drops it, loading
builds a fresh one and starts it (so no backend needs to support a second ``start``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

from edged.backends.base import Backend
from edged.errors import BackendFailed
from edged.types import BackendStats, Request, StreamEvent

log = logging.getLogger("edged.backend.resident")


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do before a load: ``evict`` these idle models first; or refuse (``refused``
    says why, and nothing is loaded)."""

    evict: tuple[str, ...] = ()
    refused: str | None = None


def plan_load(
    size_mb: float,
    resident: Mapping[str, tuple[float, float | None]],
    *,
    max_resident_mb: float | None,
    mem_available_mb: float | None,
    reserve_mb: float = 256.0,
) -> Plan:
    """Whether a model of ``size_mb`` may be loaded now. ``resident``: name -> (its size,
    seconds idle, or None while busy or never unloadable). Idle models are evicted, longest
    idle first, until the device-wide budget and ``MemAvailable`` (less ``reserve_mb``) hold
    the new one. Pure."""
    total = sum(s for s, _ in resident.values())
    idle = sorted(
        ((idle_s, name, s) for name, (s, idle_s) in resident.items() if idle_s is not None),
        reverse=True,
    )
    evict: list[str] = []
    freed = 0.0

    def fits() -> bool:
        over_budget = max_resident_mb is not None and total - freed + size_mb > max_resident_mb
        short = mem_available_mb is not None and mem_available_mb + freed - reserve_mb < size_mb
        return not over_budget and not short

    for _, name, s in idle:
        if fits():
            break
        evict.append(name)
        freed += s
    if fits():
        return Plan(evict=tuple(evict))
    if max_resident_mb is not None and total - freed + size_mb > max_resident_mb:
        return Plan(
            refused=f"{size_mb:.0f} MB would exceed max_resident_mb {max_resident_mb:.0f} "
            f"({total - freed:.0f} MB busy)"
        )
    return Plan(
        refused=f"{size_mb:.0f} MB does not fit: MemAvailable {mem_available_mb:.0f} MB "
        f"less {reserve_mb:.0f} MB reserve"
    )


def mem_available_mb(root: Path = Path("/")) -> float | None:
    """``MemAvailable`` from ``<root>/proc/meminfo``, MB; None when unreadable."""
    try:
        for line in (root / "proc" / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class Residency:
    """The device-wide book of resident models (one per daemon)."""

    def __init__(
        self,
        max_resident_mb: float | None,
        meminfo: Callable[[], float | None] = mem_available_mb,
    ) -> None:
        self.max_resident_mb = max_resident_mb
        self.meminfo = meminfo
        self.members: dict[str, Resident] = {}


class Resident:
    """A device backend loaded on demand, unloaded after ``keep_alive_s`` idle (-1: never)."""

    def __init__(
        self,
        name: str,
        make: Callable[[], Backend],
        *,
        size_mb: float,
        keep_alive_s: float,
        book: Residency,
        supports_tools: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.supports_tools = supports_tools
        self._make = make
        self.size_mb = size_mb
        self.keep_alive_s = keep_alive_s
        self._book = book
        self._clock = clock
        self.inner: Backend | None = None
        self._active = 0
        self._last_used = clock()
        self._lock = asyncio.Lock()
        self._idle_task: asyncio.Task[None] | None = None
        #: Why the last load was refused (None after a load).
        self.refused: str | None = None
        #: Seconds the last load took (counted in the request's time; telemetry).
        self.load_s: float | None = None
        self._last: BackendStats | None = None  # the figures before the last unload
        book.members[name] = self

    def idle_s(self) -> float | None:
        """Seconds idle while loaded and unloadable; None while busy or kept for ever."""
        if self.inner is None or self._active or self.keep_alive_s < 0:
            return None
        return self._clock() - self._last_used

    def healthy(self) -> bool:
        """Loaded and healthy, or not loaded (it loads on demand, or says why not)."""
        return self.inner.healthy() if self.inner is not None else True

    @property
    def resident(self) -> bool:
        """Whether the model is in memory now (telemetry)."""
        return self.inner is not None

    def stats(self) -> BackendStats:
        """The loaded backend's figures. Unloaded: nothing queued, the speed measured while
        it was loaded, and its time to first token plus the last load's time (so the
        deadline estimate counts the load)."""
        if self.inner is not None:
            return self.inner.stats()
        last = self._last
        if last is None or last.ttft_s is None:
            return BackendStats(queue_depth=0)
        return BackendStats(
            queue_depth=0, tokens_per_s=last.tokens_per_s, ttft_s=last.ttft_s + (self.load_s or 0)
        )

    async def start(self) -> None:
        """A model kept for ever loads now; the others on their first request."""
        if self.keep_alive_s < 0:
            await self._load()
        else:
            self._idle_task = asyncio.create_task(self._watch(), name=f"residency-{self.name}")

    async def restart(self) -> None:
        """Restart the loaded backend (the supervisor's call)."""
        if self.inner is not None:
            await self.inner.restart()

    async def close(self) -> None:
        """Unload, and stop watching."""
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
        await self._unload("stopping")

    async def _watch(self) -> None:
        period_s = min(max(self.keep_alive_s / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period_s)
            idle = self.idle_s()
            if idle is not None and idle >= self.keep_alive_s:
                async with self._lock:
                    if self.idle_s() is not None:
                        await self._unload("idle")

    async def _unload(self, why: str) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            self._last = inner.stats()
            await inner.close()
            log.info("event=residency_unloaded backend=%s reason=%s", self.name, why)

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        free = await loop.run_in_executor(None, self._book.meminfo)
        others = {
            n: (m.size_mb, m.idle_s())
            for n, m in self._book.members.items()
            if m is not self and m.inner is not None
        }
        plan = plan_load(
            self.size_mb, others, max_resident_mb=self._book.max_resident_mb, mem_available_mb=free
        )
        if plan.refused is not None:
            self.refused = plan.refused
            log.warning("event=residency_refused backend=%s reason=%r", self.name, plan.refused)
            raise BackendFailed(f"{self.name}: not loaded: {plan.refused}", before_first_token=True)
        for name in plan.evict:
            await self._book.members[name]._unload(f"evicted for {self.name}")
        t0 = time.monotonic()
        inner = self._make()
        await inner.start()
        self.inner, self.refused = inner, None
        self.load_s = time.monotonic() - t0
        log.info("event=residency_loaded backend=%s load_s=%.3f", self.name, self.load_s)

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """Load when needed (the load counts in the request's time), then stream."""
        self._active += 1
        try:
            async with self._lock:
                if self.inner is None:
                    await self._load()
                inner = self.inner
            assert inner is not None
            async with aclosing(inner.generate(request)) as events:
                async for ev in events:
                    yield ev
        finally:
            self._active -= 1
            self._last_used = self._clock()
