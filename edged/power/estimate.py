"""A power model for boards without power sensors (source kind ``estimate``; Coral Dev Board).

Power is ``idle_w + (max_w - idle_w) * utilization``, where utilization is the fraction of
CPU time that was busy between two reads of ``/proc/stat`` (proc(5)): on the aggregate
``cpu`` line the fields are user, nice, system, idle, iowait, irq, softirq, steal, guest,
guest_nice in USER_HZ ticks; guest and guest_nice are already counted in user and nice, so
the total is the sum of the first eight, and idle time is idle + iowait. The first
``/proc/stat`` snapshot is taken when the source is created, so the first read already has a
utilization. Every sample is marked estimated.

``temp_paths`` adds temperatures (files in milli-degrees C, relative to the root) to
``temps_c``: a mapping gives the names; a list names each file after the ``type`` file next
to it (thermal zones: ``/sys/class/thermal/thermal_zone0/temp`` -> ``cpu-thermal``), else
after its directory (``/sys/class/apex/apex_0/temp``, the Coral Edge TPU -> ``apex_0``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from edged.errors import ConfigError
from edged.power.base import (
    BuildContext,
    PowerSample,
    SensorInfo,
    read_sysfs_int,
    read_sysfs_str,
    register,
)

_STAT = "proc/stat"


_read_str = read_sysfs_str
_read_int = read_sysfs_int


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def read_cpu_times(path: Path) -> tuple[int, int]:
    """(busy, total) CPU ticks since boot from the aggregate ``cpu`` line of /proc/stat."""
    text = path.read_bytes().decode("ascii", "replace")
    for line in text.splitlines():
        if line.startswith("cpu "):
            try:
                ticks = [int(x) for x in line.split()[1:]]
            except ValueError:
                raise ValueError(f"{path}: bad cpu line: {line!r}") from None
            if len(ticks) < 4:
                raise ValueError(f"{path}: cpu line has {len(ticks)} fields, need 4+")
            total = sum(ticks[:8])  # user..steal; guest/guest_nice are inside user/nice
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            return total - idle, total
    raise ValueError(f"{path}: no aggregate 'cpu' line")


@register("estimate", board_temp_paths=False)
class EstimateSource:
    """Board power modelled from CPU utilization, for boards that cannot measure it."""

    name: str = "estimate"
    estimated: bool = True
    #: /proc/stat counts in 10 ms ticks (USER_HZ 100): faster reads see too few ticks.
    max_rate_hz: float = 10.0

    @classmethod
    def from_config(cls, ctx: BuildContext) -> EstimateSource:
        """The profile's [estimate] idle_w (``power.idle_w`` first) and max_w, with its
        temperature files; ConfigError without a profile that has [estimate]."""
        est = ctx.profile.estimate if ctx.profile is not None else None
        if est is None:
            raise ConfigError(
                "power.source 'estimate' needs a board profile with [estimate] idle_w and "
                "max_w (power.profile)"
            )
        idle_w = ctx.cfg.idle_w if ctx.cfg.idle_w is not None else est.idle_w
        facts = ctx.facts
        temp_paths = dict(facts.temp_paths) if facts else {}
        return cls(root=ctx.root, idle_w=idle_w, max_w=est.max_w, temp_paths=temp_paths)

    def __init__(
        self,
        *,
        root: Path,
        idle_w: float,
        max_w: float,
        temp_paths: Mapping[str, str] | Sequence[str] | None = None,
    ) -> None:
        if not (math.isfinite(idle_w) and math.isfinite(max_w)) or idle_w < 0:
            raise ValueError(f"idle_w ({idle_w}) and max_w ({max_w}) must be finite, >= 0")
        if max_w < idle_w:
            raise ValueError(f"max_w ({max_w}) must not be below idle_w ({idle_w})")
        if isinstance(temp_paths, str):
            raise TypeError("temp_paths is a list or a mapping of paths, not one string")
        self.root = Path(root)
        self.idle_w = float(idle_w)
        self.max_w = float(max_w)
        self._stat = self.root / _STAT
        self._temps: dict[str, Path] = {}
        if isinstance(temp_paths, Mapping):
            self._temps = {name: _under(self.root, p) for name, p in temp_paths.items()}
        elif temp_paths is not None:
            for p in temp_paths:
                f = _under(self.root, p)
                self._temps[self._temp_name(f)] = f
        self._prev: tuple[int, int] | None = None
        self._util: float | None = None
        with contextlib.suppress(OSError, ValueError):  # read() raises it, sensors() says it
            self._prev = read_cpu_times(self._stat)

    @staticmethod
    def _temp_name(f: Path) -> str:
        try:
            name = _read_str(f.parent / "type")
        except OSError:
            name = ""
        return name or f.parent.name

    @property
    def utilization(self) -> float | None:
        """The CPU busy fraction of the last read (None before one)."""
        return self._util

    def read(self) -> PowerSample:
        """Estimate once; OSError/ValueError when /proc/stat or a temperature file fails."""
        t = time.monotonic()
        busy, total = read_cpu_times(self._stat)
        temps = {name: _read_int(f) / 1000.0 for name, f in self._temps.items()}
        if self._prev is None:
            self._prev = (busy, total)
            return PowerSample(
                t_s=t,
                total_w=None,
                temps_c=temps,
                estimated=True,
                total_reason="first sample: utilization needs two /proc/stat reads",
            )
        d_busy, d_total = busy - self._prev[0], total - self._prev[1]
        if d_total > 0:
            self._util = min(1.0, max(0.0, d_busy / d_total))
            self._prev = (busy, total)
        # else: no tick elapsed since the previous read; keep the last utilization
        if self._util is None:
            return PowerSample(
                t_s=t,
                total_w=None,
                temps_c=temps,
                estimated=True,
                total_reason="no CPU time elapsed since the previous read",
            )
        watts = self.idle_w + (self.max_w - self.idle_w) * self._util
        return PowerSample(t_s=t, total_w=watts, temps_c=temps, estimated=True)

    def sensors(self) -> list[SensorInfo]:
        """/proc/stat and the temperature files, with readings or problems."""
        out: list[SensorInfo] = []
        try:
            read_cpu_times(self._stat)
            util = f"{100 * self._util:.0f}% busy" if self._util is not None else "ok"
            out.append(
                SensorInfo(
                    "cpu", str(self._stat), "cpu", f"{util}; model {self.idle_w:g}-{self.max_w:g} W"
                )
            )
        except (OSError, ValueError) as e:
            out.append(
                SensorInfo("cpu", str(self._stat), "cpu", problem=f"{type(e).__name__}: {e}")
            )
        for name, f in self._temps.items():
            try:
                out.append(SensorInfo(name, str(f), "thermal", f"{_read_int(f) / 1000:.1f} C"))
            except (OSError, ValueError) as e:
                out.append(SensorInfo(name, str(f), "thermal", problem=f"{type(e).__name__}: {e}"))
        return out

    def close(self) -> None:
        """Nothing is held open."""
