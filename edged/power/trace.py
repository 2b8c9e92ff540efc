"""Replay a recorded power trace (source kind ``trace``), for demos, tests and benchmarks.

The file is CSV with the header ``t_s,power_w`` (seconds, board total in watts), rows sorted
by strictly increasing ``t_s``, at least two of them. Blank lines and lines starting with
``#`` are ignored. Replay starts when the source is created: at ``elapsed`` seconds the
power is the trace's value at ``t_first + elapsed``, linearly interpolated between rows;
past the last row it loops (each loop is offset by the trace's duration,
``t_last - t_first``). ``energy_j`` is the exact integral of the replayed curve since the
source was created, so the meter can integrate exactly.

The trace file path is used as given (it is a configuration file, not a sysfs path).
Problems in the file raise :class:`TraceError` (a ValueError) naming the file and line.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from pathlib import Path

from edged.errors import ConfigError
from edged.power.base import BuildContext, PowerSample, SensorInfo, register

HEADER = ("t_s", "power_w")


class TraceError(ValueError):
    """The trace file is not a valid ``t_s,power_w`` CSV; the message names the line."""


def _number(path: Path, lineno: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}:{lineno}: {field} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"{path}:{lineno}: {field} {text!r} is not a finite number")
    return value


def load_trace(path: Path) -> tuple[list[float], list[float]]:
    """(times, watts) from a ``t_s,power_w`` CSV; TraceError names the line at fault."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    times: list[float] = []
    watts: list[float] = []
    header_seen = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if not header_seen:
            if tuple(fields) != HEADER:
                raise TraceError(f"{path}:{lineno}: the header must be 't_s,power_w', got {line!r}")
            header_seen = True
            continue
        if len(fields) != len(HEADER):
            raise TraceError(
                f"{path}:{lineno}: expected 2 fields (t_s,power_w), got {len(fields)}: {line!r}"
            )
        t = _number(path, lineno, "t_s", fields[0])
        w = _number(path, lineno, "power_w", fields[1])
        if w < 0:
            raise TraceError(f"{path}:{lineno}: power_w {w} is negative")
        if times and t <= times[-1]:
            raise TraceError(
                f"{path}:{lineno}: t_s {fields[0]} is not after the previous row's "
                f"{times[-1]:g} (rows must be sorted by strictly increasing t_s)"
            )
        times.append(t)
        watts.append(w)
    if not header_seen:
        raise TraceError(f"{path}: empty trace; expected the header 't_s,power_w'")
    if len(times) < 2:
        raise TraceError(f"{path}: a trace needs at least 2 rows, got {len(times)}")
    return times, watts


@register("trace")
class TraceSource:
    """Replays ``path`` from the moment it is created, looping.

    ``clock`` returns monotonic seconds (tests pass a fake one); it also stamps the samples.
    ``root`` is accepted like every source's and not used.
    """

    name: str = "trace"
    #: Replayed numbers are not a measurement of this device.
    estimated: bool = True
    max_rate_hz: float = 1000.0

    @classmethod
    def from_config(cls, ctx: BuildContext) -> TraceSource:
        """``power.trace_file``, else the profile's trace (relative to its directory)."""
        path = ctx.cfg.trace_file
        facts = ctx.facts
        if path is None and facts is not None and facts.trace is not None:
            path = ctx.profiles_dir / facts.trace
        if path is None:
            raise ConfigError(
                "power.source 'trace' needs power.trace_file (a CSV with header t_s,power_w) "
                "or a board profile with power.trace"
            )
        return cls(path=path, root=ctx.root, clock=time.monotonic)

    def __init__(
        self,
        *,
        path: Path,
        root: Path = Path("/"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.root = Path(root)
        self._clock = clock
        self._t, self._w = load_trace(self.path)
        self.duration_s = self._t[-1] - self._t[0]
        # cumulative energy at each row (exact for a piecewise-linear curve)
        self._cum = [0.0]
        for i in range(1, len(self._t)):
            dt = self._t[i] - self._t[i - 1]
            self._cum.append(self._cum[-1] + dt * (self._w[i] + self._w[i - 1]) / 2)
        self._start = clock()

    def _at(self, offset: float) -> tuple[float, float]:
        """(watts, joules since the trace's start) at ``offset`` in [0, duration)."""
        t = self._t[0] + offset
        i = max(0, min(bisect.bisect_right(self._t, t) - 1, len(self._t) - 2))
        t0, t1 = self._t[i], self._t[i + 1]
        w0, w1 = self._w[i], self._w[i + 1]
        w = w0 + (w1 - w0) * (t - t0) / (t1 - t0)
        return w, self._cum[i] + (t - t0) * (w0 + w) / 2

    def read(self) -> PowerSample:
        """The trace's power now (never fails once loaded)."""
        now = self._clock()
        elapsed = now - self._start
        loops = math.floor(elapsed / self.duration_s)
        offset = elapsed - loops * self.duration_s
        w, j = self._at(offset)
        return PowerSample(
            t_s=now,
            total_w=w,
            estimated=True,
            energy_j=loops * self._cum[-1] + j,
        )

    def sensors(self) -> list[SensorInfo]:
        """The trace file and its extent."""
        return [
            SensorInfo(
                self.path.name,
                str(self.path),
                "total",
                f"{len(self._t)} points over {self.duration_s:g} s, looping",
            )
        ]

    def close(self) -> None:
        """Nothing is held open."""
