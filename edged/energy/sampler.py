"""The power sampler: one thread reading the power source on a fixed monotonic cadence.

Sensor reads may block (I2C), so the sampler has its own thread and never touches the event
loop. Samples go into a ring buffer (``buffer_s`` seconds); the meter and telemetry read it
under a lock. A read that fails leaves a gap (and the reason); a source that keeps failing
is reported, never turned into zeros.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edged.power.base import PowerSample, PowerSource
from edged.types import PowerState

log = logging.getLogger("edged.sampler")


@dataclass(frozen=True, slots=True)
class Point:
    """One sample of the total: monotonic time, watts, and the cumulative counter if any."""

    t_s: float
    w: float | None
    energy_j: float | None


class Sampler:
    """Reads ``source`` at ``hz`` into a ring buffer, on its own thread."""

    def __init__(
        self,
        source: PowerSource,
        hz: float,
        buffer_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.hz = min(hz, source.max_rate_hz)
        self.period_s = 1.0 / self.hz
        self._clock = clock
        self._points: deque[Point] = deque(maxlen=max(8, int(buffer_s * self.hz)))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest: PowerSample | None = None
        self.last_error: str | None = None
        self.failures = 0  # consecutive
        self.reads = 0
        self.missed_ticks = 0
        self.cpu_s = 0.0  # the sampler thread's own CPU time
        self.started_at_s: float | None = None
        self.last_ok_s: float | None = None

    # --- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sampling thread."""
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread and close the source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.source.close()

    def alive(self) -> bool:
        """Whether the sampling thread runs (for the watchdog's liveness check)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        self.started_at_s = next_t = self._clock()
        while not self._stop.is_set():
            self.sample_once()
            self.cpu_s = time.thread_time()
            next_t += self.period_s
            now = self._clock()
            if now > next_t + self.period_s:  # fell behind (slow sensor, suspended VM)
                skipped = int((now - next_t) / self.period_s)
                self.missed_ticks += skipped
                next_t += skipped * self.period_s
            self._stop.wait(max(0.0, next_t - now))

    def sample_once(self) -> None:
        """Read the source once into the buffer (the thread's step; tests call it)."""
        try:
            s = self.source.read()
        except (OSError, ValueError, ArithmeticError) as e:
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                log.warning(
                    "event=power_read_failed source=%s failures=%d error=%r",
                    self.source.name,
                    self.failures,
                    self.last_error,
                )
            with self._lock:
                self._points.append(Point(self._clock(), None, None))
            return
        if self.failures:
            log.info(
                "event=power_read_recovered source=%s after=%d", self.source.name, self.failures
            )
        self.failures = 0
        self.reads += 1
        self.last_ok_s = s.t_s
        with self._lock:
            self.latest = s
            self._points.append(Point(s.t_s, s.total_w, s.energy_j))
            if s.total_w is None:
                self.last_error = s.total_reason

    # --- readers ---------------------------------------------------------------------------

    def points(self, t0: float, t1: float) -> list[Point]:
        """Samples from the last one at or before ``t0`` to the first at or after ``t1``."""
        # Walk back from the newest sample (windows are recent): no copy of the buffer.
        out: list[Point] = []
        with self._lock:
            for p in reversed(self._points):
                if p.t_s >= t1 and out and out[-1].t_s >= t1:
                    out[-1] = p  # keep only the first sample at or after t1
                    continue
                out.append(p)
                if p.t_s <= t0:
                    break
        out.reverse()
        return out

    def healthy(self) -> bool:
        """Recent readings arrive (within 5 periods) and the source reports a total."""
        if self.last_ok_s is None:
            return False
        fresh = self._clock() - self.last_ok_s <= 5 * self.period_s + 0.05
        return fresh and self.latest is not None and self.latest.total_w is not None

    def why_not(self) -> str:
        """Why readings are unusable now (for energy: null with a reason)."""
        if self.last_ok_s is None:
            return self.last_error or "no power reading yet"
        if self.latest is not None and self.latest.total_w is None:
            return self.latest.total_reason or "the source reports no total power"
        return f"power source stopped answering ({self.last_error or 'no recent reading'})"

    def power_state(self) -> PowerState:
        """The latest reading as the router sees it: battery, charging and throttling as last
        read; watts only while readings are fresh, else None with the reason."""
        s = self.latest
        if s is None:
            return PowerState()
        fresh = self.healthy()
        return PowerState(
            battery_pct=s.battery_pct,
            charging=s.charging,
            power_w=s.total_w if fresh else None,
            thermal_throttled=s.throttled,
            reason=None if fresh else self.why_not(),
            power_mode=s.power_mode.name if s.power_mode is not None else None,
        )
