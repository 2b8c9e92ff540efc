"""Energy windows against exact integrals (fake clock, signals with known integrals)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from edged.energy.meter import EnergyMeter, integrate
from edged.energy.sampler import Point, Sampler
from edged.power.base import PowerSample, SensorInfo
from edged.types import PowerState

HZ = 50.0
TS = 1 / HZ


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FnSource:
    """A source whose power is a function of time (and optionally its exact integral)."""

    name = "fn"
    estimated = False
    max_rate_hz = 1000.0

    def __init__(
        self, clock: Clock, w: Callable[[float], float], e: Callable[[float], float] | None = None
    ) -> None:
        self.clock, self.w, self.e = clock, w, e
        self.fail = False

    def read(self) -> PowerSample:
        if self.fail:
            raise OSError("sensor gone")
        t = self.clock()
        return PowerSample(t_s=t, total_w=self.w(t), energy_j=self.e(t) if self.e else None)

    def sensors(self) -> list[SensorInfo]:
        return []

    def close(self) -> None:
        pass


def rig(
    w: Callable[[float], float],
    e: Callable[[float], float] | None = None,
    idle_w: float | None = None,
) -> tuple[Clock, FnSource, Sampler, EnergyMeter]:
    clock = Clock()
    src = FnSource(clock, w, e)
    sampler = Sampler(src, HZ, clock=clock)
    meter = EnergyMeter(sampler, idle_w=idle_w, clock=clock)
    return clock, src, sampler, meter


def run_to(clock: Clock, sampler: Sampler, t_end: float, phase: float = 0.0) -> None:
    """Sample at 50 Hz (offset by ``phase`` of a period) until ``t_end``."""
    t = math.floor(clock.t / TS) * TS + phase * TS
    while t <= t_end + 1e-12:
        if t >= clock.t:
            clock.t = t
            sampler.sample_once()
        t += TS
    clock.t = t_end


def window(
    clock: Clock, sampler: Sampler, meter: EnergyMeter, t0: float, t1: float
) -> float | None:
    run_to(clock, sampler, t0)
    meter.begin("w")
    run_to(clock, sampler, t1)
    return meter.end("w", 10).joules


SHAPES: dict[str, tuple[Callable[[float], float], Callable[[float], float], float]] = {
    # power(t), exact energy from 0 to t, the size of its steps (0: smooth)
    "constant": (lambda t: 5.0, lambda t: 5.0 * t, 0.0),
    "ramp": (lambda t: 2.0 + 0.5 * (t - 1000), lambda t: 2.0 * t + 0.25 * (t - 1000) ** 2, 0.0),
    "step": (
        lambda t: 3.0 if t < 1000.537 else 8.0,
        lambda t: 3.0 * t if t < 1000.537 else 3.0 * 1000.537 + 8.0 * (t - 1000.537),
        5.0,
    ),
    "square-1s": (
        lambda t: 8.0 if (t % 1.0) < 0.5 else 3.0,
        lambda t: (t // 1.0) * 5.5 + min(t % 1.0, 0.5) * 8 + max(t % 1.0 - 0.5, 0) * 3,
        5.0,
    ),
    "square-0.13s": (
        lambda t: 8.0 if (t % 0.13) < 0.065 else 3.0,
        lambda t: (
            (t // 0.13) * 0.13 * 5.5 + min(t % 0.13, 0.065) * 8 + max(t % 0.13 - 0.065, 0) * 3
        ),
        5.0,
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("length_s", [0.2, 0.5, 1.0, 3.7])
@pytest.mark.parametrize("phase", [0.0, 0.37, 0.81])
def test_window_energy_against_the_exact_integral(
    shape: str, length_s: float, phase: float
) -> None:
    w, e, step = SHAPES[shape]
    t0 = 1000.1234
    exact = e(t0 + length_s) - e(t0)
    # with an energy counter (RAPL, traces): exact but for the two boundary intervals
    clock, _, sampler, meter = rig(w, e)
    run_to(clock, sampler, t0 - 0.5, phase)
    got = window(clock, sampler, meter, t0, t0 + length_s)
    assert got is not None
    assert abs(got - exact) <= max(0.01 * exact, 2 * step * TS) + 1e-9
    # power samples only (INA3221, power_supply): trapezoid, exact for constant and linear
    # power; each step inside the window can cost at most step x period / 2
    clock, _, sampler, meter = rig(w)
    run_to(clock, sampler, t0 - 0.5, phase)
    got = window(clock, sampler, meter, t0, t0 + length_s)
    assert got is not None
    edges = 0 if not step else int(length_s / (0.065 if "0.13" in shape else 0.5)) + 2
    bound = max(0.01 * exact, edges * step * TS / 2 + 2 * step * TS) if step else 0.01 * exact
    assert abs(got - exact) <= bound + 1e-9, (got, exact, bound)
    if not step:
        assert abs(got - exact) <= 0.01 * exact  # the 1% for 0.2 s+ windows at 50 Hz


def test_overlapping_windows_share_power_and_sum_to_the_total() -> None:
    clock, _, sampler, meter = rig(lambda t: 6.0)
    run_to(clock, sampler, 1000.5)
    meter.begin("a")  # a: 1000.5 .. 1002.5
    run_to(clock, sampler, 1001.0)
    meter.begin("b")  # b: 1001.0 .. 1002.0
    run_to(clock, sampler, 1002.0)
    b = meter.end("b", 5).joules
    run_to(clock, sampler, 1002.5)
    a = meter.end("a", 5).joules
    assert a is not None and b is not None
    assert b == pytest.approx(3.0)  # 1 s shared by two: 6 W x 1 s / 2
    assert a == pytest.approx(9.0)  # 0.5 s alone + 1 s shared + 0.5 s alone: 3 + 3 + 3
    assert a + b == pytest.approx(6.0 * 2.0)  # the board's total over the union


def test_idle_baseline_makes_joules_active_the_marginal_cost() -> None:
    busy = [False]
    clock, _, sampler, meter = rig(lambda t: 9.0 if busy[0] else 4.0)
    run_to(clock, sampler, 1010.0)  # 10 s idle: the baseline is measured
    busy[0] = True
    r = None
    meter.begin("x")
    run_to(clock, sampler, 1012.0)
    r = meter.end("x", 100)
    assert r.joules == pytest.approx(18.0, rel=0.02)
    assert r.joules_active == pytest.approx(10.0, rel=0.04)  # (9 - 4) W x 2 s
    assert r.tokens_per_joule == pytest.approx(100 / r.joules)
    assert r.mwh_per_1k_tokens == pytest.approx(r.joules / 3.6 * 1000 / 100)
    assert r.sample_hz == pytest.approx(50, abs=1.5)
    assert r.source == "fn" and r.estimated is False and r.reason is None


def test_without_idle_samples_joules_active_is_null_with_a_reason() -> None:
    clock, _, sampler, meter = rig(lambda t: 5.0)
    run_to(clock, sampler, 1000.1)
    meter.begin("x")
    run_to(clock, sampler, 1001.0)
    r = meter.end("x", 3)
    assert r.joules == pytest.approx(4.5)
    assert r.joules_active is None and r.reason == "idle baseline not measured yet"


def test_sensor_vanishing_gives_null_with_reason_never_zero() -> None:
    clock, src, sampler, meter = rig(lambda t: 5.0)
    run_to(clock, sampler, 1001.0)
    meter.begin("x")
    src.fail = True
    run_to(clock, sampler, 1002.0)
    r = meter.end("x", 3)
    assert r.joules is None and r.tokens_per_joule is None
    assert r.reason and "sensor gone" in r.reason
    assert not sampler.healthy()
    src.fail = False  # back: later windows are measured again
    run_to(clock, sampler, 1003.0)
    meter.begin("y")
    run_to(clock, sampler, 1004.0)
    assert meter.end("y", 3).joules == pytest.approx(5.0)


def test_power_state_gives_watts_only_while_readings_are_fresh() -> None:
    clock, src, sampler, _ = rig(lambda t: 5.0)
    assert sampler.power_state() == PowerState()  # nothing read yet: the default reason
    run_to(clock, sampler, 1001.0)
    fresh = sampler.power_state()
    assert fresh.power_w == pytest.approx(5.0) and fresh.reason is None
    src.fail = True  # the last good reading stays, but its watts are no longer current
    run_to(clock, sampler, 1002.0)
    stale = sampler.power_state()
    assert stale.power_w is None
    assert stale.reason is not None and "sensor gone" in stale.reason


def test_integrate_refuses_gaps() -> None:
    pts = [Point(0.0, 5.0, None), Point(0.02, 5.0, None), Point(1.0, 5.0, None)]
    assert integrate(pts, 0.0, 1.0, max_gap_s=0.1) is None
    assert integrate(pts[:2], 0.0, 0.02, max_gap_s=0.1) == pytest.approx(0.1)


def test_failed_reads_inside_a_window_are_not_bridged() -> None:
    clock, src, sampler, meter = rig(lambda t: 7.5)
    run_to(clock, sampler, 1001.0)
    meter.begin("x")
    run_to(clock, sampler, 1001.5)
    src.fail = True
    run_to(clock, sampler, 1002.5)  # one second of failed reads inside the window
    src.fail = False
    run_to(clock, sampler, 1003.0)
    r = meter.end("x", 5)
    assert r.joules is None and r.reason == "power readings missing during the request"


def test_a_long_window_overlapped_briefly_is_charged_its_share_only() -> None:
    clock, _, sampler, meter = rig(lambda t: 5.0)
    run_to(clock, sampler, 1001.0)
    meter.begin("long")  # 100 s
    run_to(clock, sampler, 1011.0)
    meter.begin("short")  # overlaps 10 s, early in the long window
    run_to(clock, sampler, 1021.0)
    short = meter.end("short", 1).joules
    run_to(clock, sampler, 1101.0)
    long = meter.end("long", 1).joules
    assert short == pytest.approx(25.0)  # 10 s x 5 W / 2
    assert long == pytest.approx(475.0)  # 90 s alone + 10 s shared
    assert short + long == pytest.approx(500.0)  # the board's 100 s


def test_two_windows_with_the_same_span_each_get_half() -> None:
    clock, _, sampler, meter = rig(lambda t: 5.0)
    run_to(clock, sampler, 1001.0)
    meter.begin("a")
    meter.begin("b")
    run_to(clock, sampler, 1002.0)
    a = meter.end("a", 1).joules
    b = meter.end("b", 1).joules
    assert a == pytest.approx(2.5) and b == pytest.approx(2.5)
