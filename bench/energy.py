"""How exact per-request energy is, and what measuring it costs.

1. accuracy  ``EnergyMeter`` windows of 0.05 to 5 s, sampled at 10 to 200 Hz on a fake clock,
             against the exact integral of known signals, on both integration paths
             (power samples: trapezoid; a cumulative counter); placements random, seeded.
2. cpu       ``Sampler`` on its real thread at 50 Hz on a trace and on a copy of the fake
             Jetson Orin Nano sysfs tree; baseline: the same loop without the read.

  .venv/bin/python bench/energy.py [--quick] [--placements 100]
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _harness as h
from edged.energy.meter import EnergyMeter
from edged.energy.sampler import Sampler
from edged.power.base import PowerSample, PowerSource, SensorInfo
from edged.power.ina3221 import Ina3221Source
from edged.power.trace import TraceSource

ROOT, SEED = h.ROOT, h.SEED
T_BASE = 1000.0  # the fake clock's origin, s
LEAD_S = 0.5  # samples taken before a window opens
LENGTHS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
RATES_HZ = (10.0, 20.0, 50.0, 100.0, 200.0)
PATHS = ("trapezoid", "counter")
GOAL_HZ = 50.0
LO_W, HI_W = 3.0, 8.0
GOAL_CPU_PCT = 1.0  # sampler CPU at 50 Hz, % of one core
GOAL_REL_ERR = 0.01  # windows of 0.2 s and longer at 50 Hz
TRACE = ROOT / "hwprofiles" / "traces" / "sim.csv"
ORIN_NANO = ROOT / "tests" / "fixtures" / "sysfs" / "jetson-orin-nano"


# --- 1: signals with known integrals, and the meter on a fake clock ---------------------------


class Signal(NamedTuple):
    """Power ``w(t)`` and an antiderivative ``e(t)``."""

    w: Callable[[float], float]
    e: Callable[[float], float]


def smooth(w: Callable[[float], float], e: Callable[[float], float]) -> Signal:
    """A signal without steps: ``w(x)`` and its integral ``e(x)``, x seconds from T_BASE."""
    return Signal(lambda t: w(t - T_BASE), lambda t: e(t - T_BASE))


def piecewise(level0: float, steps: Sequence[tuple[float, float]]) -> Signal:
    """Piecewise constant from T_BASE: ``level0``, then each (time, level) in order."""
    bps = [T_BASE, *(t for t, _ in steps)]
    levels = [level0, *(w for _, w in steps)]
    spans = zip(itertools.pairwise(bps), levels, strict=False)
    cum = list(itertools.accumulate(((b - a) * w for (a, b), w in spans), initial=0.0))

    def at(t: float) -> int:
        return max(0, bisect.bisect_right(bps, t) - 1)

    def e(t: float) -> float:
        i = at(t)
        return cum[i] + (t - bps[i]) * levels[i]

    return Signal(lambda t: levels[at(t)], e)


def square(period_s: float, span_s: float = 20.0) -> Signal:
    """8 W for the first half of each period, 3 W for the second."""
    half = period_s / 2
    n = int(span_s / half)
    return piecewise(HI_W, [(T_BASE + k * half, LO_W if k % 2 else HI_W) for k in range(1, n)])


def llm_profile(span_s: float) -> Signal:
    """Idle 3 W with decode bursts of 8 W: bursts of 0.3-6 s, idle gaps of 0.2-4 s."""
    rng = random.Random(f"{SEED}-llm")
    steps: list[tuple[float, float]] = []
    t = T_BASE + rng.uniform(0.2, 2.0)
    while t < T_BASE + span_s:
        steps.append((t, HI_W))
        t += rng.uniform(0.3, 6.0)
        steps.append((t, LO_W))
        t += rng.uniform(0.2, 4.0)
    return piecewise(LO_W, steps)


LLM_SPAN_S = 400.0
LLM = llm_profile(LLM_SPAN_S)
FIXED: dict[str, Signal] = {
    "constant": smooth(lambda x: 5.0, lambda x: 5.0 * x),
    "ramp": smooth(lambda x: 2.0 + 0.5 * x, lambda x: 2.0 * x + 0.25 * x * x),  # 2.5-10 W
    "square-0.13s": square(0.13),
    "square-1s": square(1.0),
}
SIGNALS = ("constant", "ramp", "step", "square-0.13s", "square-1s", "llm-like")


def place(kind: str, rng: random.Random, length: float) -> tuple[Signal, float]:
    """(signal, window start) for one random placement."""
    if kind in FIXED:
        return FIXED[kind], T_BASE + 1.0 + rng.uniform(0.0, 10.0)
    if kind == "step":
        t0 = T_BASE + 1.0 + rng.uniform(0.0, 1.0)
        return piecewise(LO_W, [(t0 + rng.uniform(0.0, length), HI_W)]), t0
    return LLM, rng.uniform(T_BASE + 1.0, T_BASE + LLM_SPAN_S - 6.0)


class FakeBoard:
    """A fake clock (call it for ``t``) and a power source reading ``signal`` at that time;
    with ``counter``, also its exact cumulative energy (as RAPL and a trace give)."""

    name = "bench"
    estimated = False
    max_rate_hz = 1000.0

    def __init__(self, signal: Signal, counter: bool, t: float) -> None:
        self.signal, self.counter, self.t = signal, counter, t

    def __call__(self) -> float:
        return self.t

    def read(self) -> PowerSample:
        e = self.signal.e(self.t) if self.counter else None
        return PowerSample(t_s=self.t, total_w=self.signal.w(self.t), energy_j=e)

    def sensors(self) -> list[SensorInfo]:
        return []

    def close(self) -> None:
        pass


def sample_at(board: FakeBoard, sampler: Sampler, times: Sequence[float]) -> None:
    for t in times:
        board.t = t
        sampler.sample_once()


def rel_error(
    sig: Signal, t0: float, length: float, *, hz: float, phase: float, path: str
) -> float:
    """Sample ``sig`` at ``hz`` (grid offset ``phase`` of a period) from LEAD_S before t0,
    open a window at t0, close it at t0 + length (between samples, as a result does)."""
    board = FakeBoard(sig, path == "counter", t0 - LEAD_S)
    sampler = Sampler(board, hz, buffer_s=30.0, clock=board)
    meter = EnergyMeter(sampler, idle_w=LO_W, clock=board)
    period, t1 = 1.0 / hz, t0 + length
    k0 = math.ceil((t0 - LEAD_S - T_BASE) / period - phase)
    n = round((LEAD_S + length) * hz) + 2
    ticks = [T_BASE + (k + phase) * period for k in range(k0, k0 + n)]
    sample_at(board, sampler, [t for t in ticks if t < t0])
    board.t = t0
    meter.begin("w")
    sample_at(board, sampler, [t for t in ticks if t0 <= t <= t1])
    board.t = t1
    got = meter.end("w", 100).joules
    assert got is not None, "the meter gave no energy"
    exact = sig.e(t1) - sig.e(t0)
    return abs(got - exact) / exact


def accuracy(placements: int) -> dict[str, Any]:
    """Every signal x rate x length x path, ``placements`` random windows each."""
    cells: dict[str, Any] = {}
    for kind, hz, length in itertools.product(SIGNALS, RATES_HZ, LENGTHS_S):
        rng = random.Random(f"{SEED}-{kind}-{hz:g}-{length:g}")
        cases = [(*place(kind, rng, length), rng.random()) for _ in range(placements)]
        for path in PATHS:
            rel = [rel_error(sig, t0, length, hz=hz, phase=ph, path=path) for sig, t0, ph in cases]
            cells[f"{kind}|{path}|{hz:g}|{length:g}"] = {
                "mean_rel": statistics.fmean(rel),
                "max_rel": max(rel),
            }
    return cells


def accuracy_goal(cells: dict[str, Any]) -> dict[str, Any]:
    """Per signal and path at 50 Hz: the worst relative error of windows >= 0.2 s, and from
    which length on every window was within the goal."""
    out: dict[str, Any] = {}
    for kind, path in itertools.product(SIGNALS, PATHS):
        row = {x: cells[f"{kind}|{path}|{GOAL_HZ:g}|{x:g}"]["max_rel"] for x in LENGTHS_S}
        ok = (x for x in LENGTHS_S if all(row[y] <= GOAL_REL_ERR for y in LENGTHS_S if y >= x))
        out[f"{kind}|{path}"] = {
            "max_rel_ge_0.2s": max(e for x, e in row.items() if x >= 0.2),
            "within_from_s": next(ok, None),
        }
    return out


# --- 2: the sampler's CPU on a real thread ----------------------------------------------------


class EmptyLoop(Sampler):
    """The sampler's own loop (the same cadence, waking the same way) without the read."""

    def sample_once(self) -> None:
        self.reads += 1


def read_cost_us(make: Callable[[], PowerSource], n: int) -> float:
    """``source.read()`` in a tight loop on this thread, µs per read (median of 5 runs)."""
    src = make()
    src.read()
    runs = []
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(n):
            src.read()
        runs.append((time.thread_time() - t0) / n * 1e6)
    src.close()
    return statistics.median(runs)


def cpu(quick: bool) -> dict[str, Any]:
    """The sampler's thread at 50 Hz on each source against the empty loop (the floor), in
    interleaved 5 s slices; ``read()`` alone in a tight loop."""
    hz, slices, slice_s = 50.0, 1 if quick else 4, 5.0
    out: dict[str, Any] = {"hz": hz, "seconds_per_variant": slices * slice_s}
    with tempfile.TemporaryDirectory(prefix="edged-bench-energy-") as tmp:
        root = Path(tmp) / "jetson-orin-nano"
        shutil.copytree(ORIN_NANO, root)
        sources: dict[str, Callable[[], PowerSource]] = {
            "trace": lambda: TraceSource(path=TRACE),
            "ina3221 sysfs": lambda: Ina3221Source(root=root, total_rail="VDD_IN"),
        }
        kinds = {"empty loop (floor)": (EmptyLoop, sources["trace"])}
        kinds |= {v: (Sampler, make) for v, make in sources.items()}
        sums = {v: {"cpu_s": 0.0, "wall_s": 0.0, "ticks": 0, "missed_ticks": 0} for v in kinds}
        for _, (v, (cls, make)) in itertools.product(range(slices), kinds.items()):
            sampler = cls(make(), hz)
            t0 = time.monotonic()
            sampler.start()
            time.sleep(slice_s)
            sampler.stop()
            s = sums[v]
            s["wall_s"] += time.monotonic() - t0
            s["cpu_s"] += sampler.cpu_s
            s["ticks"] += sampler.reads
            s["missed_ticks"] += sampler.missed_ticks
        n_reads = {"trace": 5_000 if quick else 20_000, "ina3221 sysfs": 1_000 if quick else 4_000}
        reads = {v: read_cost_us(sources[v], n) for v, n in n_reads.items()}
    floor_pct = math.nan
    for v, s in sums.items():
        pct = s["cpu_s"] / s["wall_s"] * 100
        floor_pct = pct if v == "empty loop (floor)" else floor_pct
        out[v] = s | {
            "pct_core": pct,
            "pct_core_above_floor": pct - floor_pct,
            "rate_hz": s["ticks"] / s["wall_s"],
            "cpu_us_per_tick": s["cpu_s"] / s["ticks"] * 1e6 if s["ticks"] else math.nan,
        }
        if v in reads:
            out[v]["read_us"] = reads[v]
            print(f"sampler at 50 Hz, {v}: {pct:.3f}% of a core ({h.goal(pct, GOAL_CPU_PCT)})")
    return out


def main() -> int:
    ap = h.parser(__doc__, "energy")
    ap.add_argument("--quick", action="store_true", help="fewer placements, 5 s of sampling")
    ap.add_argument(
        "--placements", type=int, default=None, help="windows per cell (default 100, --quick 15)"
    )
    args = ap.parse_args()
    placements = args.placements or (15 if args.quick else 100)
    started = time.perf_counter()
    f: dict[str, Any] = {"placements": placements, "seed": SEED}
    f["accuracy"] = cells = accuracy(placements)
    f["accuracy_goal_50hz"] = goal = accuracy_goal(cells)
    for path in PATHS:
        e = max(goal[f"{k}|{path}"]["max_rel_ge_0.2s"] for k in SIGNALS)
        print(f"worst error >= 0.2 s at 50 Hz, {path}: {e:.2%} ({h.goal(e, GOAL_REL_ERR)})")
    f["cpu"] = cpu(bool(args.quick))
    h.write(args, f, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
