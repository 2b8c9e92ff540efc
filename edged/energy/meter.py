"""Per-request energy windows.

The interface follows Zeus: ``begin(key)`` at admission, ``end(key)`` at the result; windows
may overlap. Attribution (docs/energy.md): at every instant the board's power is shared
equally among the windows open at that instant, so overlapping windows add up to the board
total. ``joules_active`` subtracts the idle baseline the same way, so it is the request's
marginal cost. Integration is exact where the source has an energy counter (RAPL, traces),
else trapezoidal over the samples. Unknown is None with the reason, never zero.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Protocol

from edged.energy.sampler import Point, Sampler
from edged.types import EnergyReport


class Meter(Protocol):
    """What the pipeline needs from energy accounting."""

    def begin(self, key: str) -> None:
        """Open a measurement window named ``key``."""
        ...

    def end(self, key: str, completion_tokens: int) -> EnergyReport:
        """Close window ``key`` and report its energy (joules, unknown as None)."""
        ...

    @property
    def idle_w(self) -> float | None:
        """The idle baseline, watts (telemetry); None while unknown."""
        ...


class NullMeter:
    """No power source: every report is unknown, with the reason."""

    def __init__(self, reason: str = "no power source configured") -> None:
        self.reason = reason
        self.idle_w: float | None = None

    def begin(self, key: str) -> None:
        """Nothing to open."""

    def end(self, key: str, completion_tokens: int) -> EnergyReport:
        """An all-unknown report."""
        return EnergyReport(
            joules=None,
            joules_active=None,
            tokens_per_joule=None,
            mwh_per_1k_tokens=None,
            source="none",
            estimated=False,
            sample_hz=None,
            reason=self.reason,
        )


def _interp(p: Point, q: Point, t: float) -> float | None:
    if p.w is None or q.w is None:
        return None
    if q.t_s == p.t_s:
        return p.w
    return p.w + (q.w - p.w) * (t - p.t_s) / (q.t_s - p.t_s)


def integrate(points: list[Point], a: float, b: float, max_gap_s: float) -> float | None:
    """Energy over [a, b] in J from samples around it; None when samples are missing.

    With energy counters on every sample in range, the counter difference (linearly
    interpolated at a and b); else the trapezoid rule over the power samples, linearly
    interpolated at a and b. The last sample's power is held up to ``max_gap_s`` past it.
    """
    if b <= a:
        return 0.0
    pts = [p for p in points if p.w is not None]
    if not pts or pts[0].t_s > a + max_gap_s or pts[-1].t_s < b - max_gap_s:
        return None
    # a gap in the readings inside the window (failed reads leave placeholders without
    # power: the spacing of the readings themselves is what counts)
    for p, q in itertools.pairwise(pts):
        if q.t_s > a and p.t_s < b and q.t_s - p.t_s > max_gap_s:
            return None
    if all(p.energy_j is not None for p in pts) and len(pts) >= 2:
        return _counter_at(pts, b) - _counter_at(pts, a)
    # trapezoid over [a, b]
    series: list[tuple[float, float]] = []
    w_a = _w_at(pts, a)
    series.append((a, w_a))
    series += [(p.t_s, p.w) for p in pts if a < p.t_s < b]  # type: ignore[misc]
    series.append((b, _w_at(pts, b)))
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in itertools.pairwise(series))


def _w_at(pts: list[Point], t: float) -> float:
    if t <= pts[0].t_s:
        return pts[0].w  # type: ignore[return-value]
    for p, q in itertools.pairwise(pts):
        if p.t_s <= t <= q.t_s:
            w = _interp(p, q, t)
            assert w is not None
            return w
    return pts[-1].w  # type: ignore[return-value]


def _counter_at(pts: list[Point], t: float) -> float:
    def c(p: Point) -> float:
        assert p.energy_j is not None
        return p.energy_j

    if t <= pts[0].t_s:
        return c(pts[0]) - (pts[0].t_s - t) * (pts[0].w or 0.0)
    for p, q in itertools.pairwise(pts):
        if p.t_s <= t <= q.t_s:
            if q.t_s == p.t_s:
                return c(p)
            return c(p) + (c(q) - c(p)) * (t - p.t_s) / (q.t_s - p.t_s)
    last = pts[-1]
    return c(last) + (t - last.t_s) * (last.w or 0.0)


class EnergyMeter:
    """Named, overlapping windows over the sampler's buffer."""

    def __init__(
        self,
        sampler: Sampler,
        *,
        idle_w: float | None = None,
        idle_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sampler = sampler
        self._fixed_idle_w = idle_w
        self._idle_window_s = idle_window_s
        self._clock = clock
        self._open: dict[str, float] = {}
        self._closed: list[tuple[str, float, float]] = []  # recent closed (key, start, end)
        self._idle_at: float | None = None  # when the idle baseline was last measured
        self.idle_w: float | None = idle_w

    @property
    def source(self) -> str:
        """The power source's kind."""
        return self.sampler.source.name

    def begin(self, key: str) -> None:
        """Open window ``key`` now."""
        self._open[key] = self._clock()

    def _max_gap(self) -> float:
        return 3 * self.sampler.period_s + 0.05

    def _measure_idle(self, now: float) -> float | None:
        """10th percentile of the last minute's readings taken while no window was open;
        re-measured at most every 5 s (it runs on the event loop: keep it cheap)."""
        if self._fixed_idle_w is not None:
            return self._fixed_idle_w
        if self._idle_at is not None and now - self._idle_at < 5.0 and self.idle_w is not None:
            return self.idle_w
        self._idle_at = now
        spans = sorted(
            [(a - 0.1, b + 0.1) for _, a, b in self._closed]
            + [(t0 - 0.1, now + 0.1) for t0 in self._open.values()]
        )
        busy: list[tuple[float, float]] = []
        for a, b in spans:  # merged, so one forward sweep decides each reading
            if busy and a <= busy[-1][1]:
                busy[-1] = (busy[-1][0], max(busy[-1][1], b))
            else:
                busy.append((a, b))
        idle: list[float] = []
        j = 0
        for p in self.sampler.points(now - self._idle_window_s, now):  # time order
            while j < len(busy) and busy[j][1] < p.t_s:
                j += 1
            inside = j < len(busy) and busy[j][0] <= p.t_s
            if p.w is not None and not inside:
                idle.append(p.w)
        if len(idle) >= 5:
            idle.sort()
            self.idle_w = idle[len(idle) // 10]  # 10th percentile: robust to stray bursts
        return self.idle_w

    def end(self, key: str, completion_tokens: int) -> EnergyReport:
        """Close window ``key``; its share of the board's energy, and the marginal part."""
        t0 = self._open.pop(key, None)
        t1 = self._clock()
        src = self.sampler.source
        if t0 is None:
            return self._unknown("no window was open for this request")
        # keep closed windows that may still overlap an open one, this one, or the idle span
        oldest = min([*self._open.values(), t0, t1 - self._idle_window_s])
        self._closed = [(k, a, b) for k, a, b in self._closed if b >= oldest]
        if not self.sampler.healthy() and self.sampler.last_ok_s is None:
            return self._unknown(self.sampler.why_not())
        # breakpoints where the number of open windows changes
        others = [(a, b) for _, a, b in self._closed]
        others += [(a, t1) for a in self._open.values()]
        self._closed.append((key, t0, t1))
        cuts = sorted({t0, t1, *(x for a, b in others for x in (a, b) if t0 < x < t1)})
        points = self.sampler.points(t0 - self._max_gap(), t1)
        joules = 0.0
        active = 0.0
        idle = self._measure_idle(t1)
        for a, b in itertools.pairwise(cuts):
            mid = (a + b) / 2
            n = 1 + sum(1 for x, y in others if x <= mid <= y)
            e = integrate(points, a, b, self._max_gap())
            if e is None:
                return self._unknown(
                    self.sampler.why_not()
                    if not self.sampler.healthy()
                    else "power readings missing during the request"
                )
            joules += e / n
            if idle is not None:
                active += (e - idle * (b - a)) / n
        dur = t1 - t0
        n_pts = sum(1 for p in points if t0 <= p.t_s <= t1 and p.w is not None)
        hz = n_pts / dur if dur > 0 else None
        tpj = completion_tokens / joules if joules > 0 and completion_tokens else None
        mwh = joules / 3.6 * 1000 / completion_tokens if completion_tokens else None
        return EnergyReport(
            joules=round(joules, 6),
            joules_active=round(active, 6) if idle is not None else None,
            tokens_per_joule=round(tpj, 6) if tpj is not None else None,
            mwh_per_1k_tokens=round(mwh, 6) if mwh is not None else None,
            source=src.name,
            estimated=src.estimated,
            sample_hz=round(hz, 2) if hz is not None else None,
            reason=None if idle is not None else "idle baseline not measured yet",
        )

    def _unknown(self, reason: str) -> EnergyReport:
        src = self.sampler.source
        return EnergyReport(
            joules=None,
            joules_active=None,
            tokens_per_joule=None,
            mwh_per_1k_tokens=None,
            source=src.name,
            estimated=src.estimated,
            sample_hz=None,
            reason=reason,
        )
