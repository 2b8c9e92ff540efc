"""CPU package power from RAPL energy counters in powercap sysfs (source kind ``rapl``).

Layout (Linux ``Documentation/power/powercap/powercap.rst``): every zone is listed under
``/sys/class/powercap/`` as ``intel-rapl:<P>`` (a top-level zone: ``package-<P>``, or
``psys``/``dram`` on some machines) and ``intel-rapl:<P>:<S>`` (its subzones: ``core``,
``uncore``, ``dram``). Each has ``name``, ``energy_uj`` (a counter, uJ) and
``max_energy_range_uj`` (where the counter wraps). AMD processors (Zen and later) use the
same ``intel-rapl`` control type and file names.

Power is the difference of two counter reads over the time between them, so the first read
has no power ("first sample"). A counter lower than its previous value has wrapped: the
difference is ``max_energy_range_uj - previous + current``. The total is the sum of the
``package-*`` zones; every readable zone is also a rail. ``energy_j`` is the packages'
energy since the first read (wraps undone), for exact integration by the meter.

Since the fix for CVE-2020-8694 (Linux 5.10 and the stable kernels it was backported to),
``energy_uj`` is readable by root only. An unreadable counter is found at construction and
reported by :meth:`RaplSource.sensors` with what to do about it; when no package counter is
readable, the total is unknown with that reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edged.power.base import (
    BuildContext,
    PowerSample,
    SensorInfo,
    read_sysfs_int,
    read_sysfs_str,
    register,
)

_BASE = "sys/class/powercap"
_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")

PERMISSION_HINT = (
    "energy_uj is readable by root only (Linux 5.10+ and backports, CVE-2020-8694): run "
    "edged as root, or make the counters readable, e.g. with a systemd-tmpfiles line "
    "'z /sys/class/powercap/intel-rapl:*/energy_uj 0444 - - -'"
)


_read_str = read_sysfs_str
_read_int = read_sysfs_int


@dataclass(frozen=True, slots=True)
class _Zone:
    key: str  # rail name: the zone's name, made unique across packages when needed
    name: str  # the zone's ``name`` file
    path: Path
    package: bool  # a top-level package-* zone (summed into the total)
    max_range_uj: int | None
    problem: str | None  # why energy_uj cannot be read (then the zone is not used)


def _scan(root: Path) -> list[_Zone]:
    raw: list[tuple[int, int | None, str, Path, int | None, str | None]] = []
    base = root / _BASE
    dirs = sorted(base.glob("intel-rapl:*")) if base.is_dir() else []
    for d in dirs:
        m = _ZONE.match(d.name)
        if not m or not d.is_dir():
            continue
        pkg, sub = int(m.group(1)), (int(m.group(2)) if m.group(2) is not None else None)
        try:
            name = _read_str(d / "name")
        except OSError:
            name = d.name
        try:
            max_range: int | None = _read_int(d / "max_energy_range_uj")
        except (OSError, ValueError):
            max_range = None
        problem: str | None = None
        try:
            _read_int(d / "energy_uj")
        except PermissionError:
            problem = PERMISSION_HINT
        except (OSError, ValueError) as e:
            problem = f"energy_uj unreadable: {type(e).__name__}: {e}"
        raw.append((pkg, sub, name, d, max_range, problem))
    names = [r[2] for r in raw]
    zones = []
    for pkg, sub, name, d, max_range, problem in raw:
        key = name if names.count(name) == 1 else f"{name}-{pkg}"
        is_package = sub is None and name.startswith("package")
        zones.append(_Zone(key, name, d, is_package, max_range, problem))
    return zones


@register("rapl")
class RaplSource:
    """RAPL package (total) and subzone (rails) power from energy counters.

    ``clock`` returns monotonic seconds (tests pass a fake one); it also stamps the samples.
    """

    name: str = "rapl"
    estimated: bool = False
    #: The counters update about every millisecond; 50 Hz keeps the quantisation small.
    max_rate_hz: float = 50.0

    @classmethod
    def from_config(cls, ctx: BuildContext) -> RaplSource:
        """The RAPL zones under the root."""
        return cls(root=ctx.root)

    def __init__(self, *, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self._clock = clock
        self._zones = _scan(self.root)
        self._readable = [z for z in self._zones if z.problem is None]
        self._prev: dict[str, int] | None = None
        self._prev_t = 0.0
        self._energy_j = 0.0  # packages' energy since the first read
        packages = [z for z in self._zones if z.package]
        self._no_total: str | None = None
        if not self._zones:
            self._no_total = f"no RAPL zones (intel-rapl:*) under {self.root / _BASE}"
        elif not packages:
            self._no_total = "no RAPL package zone (package-*) found"
        elif any(z.problem is not None for z in packages):
            bad = next(z for z in packages if z.problem is not None)
            self._no_total = f"{bad.path.name}: {bad.problem}"

    def read(self) -> PowerSample:
        """Read the counters once; power needs the previous read (none on the first)."""
        t = self._clock()
        if not self._readable:
            return PowerSample(t_s=t, total_w=None, total_reason=self._no_total)
        now = {z.key: _read_int(z.path / "energy_uj") for z in self._readable}
        prev, prev_t = self._prev, self._prev_t
        if prev is None:
            self._prev, self._prev_t = now, t
            return PowerSample(
                t_s=t,
                total_w=None,
                total_reason="first sample: RAPL gives energy counters, power needs two reads",
                energy_j=0.0 if self._no_total is None else None,
            )
        dt = t - prev_t
        if dt <= 0:
            return PowerSample(
                t_s=t,
                total_w=None,
                total_reason="no time elapsed since the previous read",
                energy_j=self._energy_j if self._no_total is None else None,
            )
        rails: dict[str, float] = {}
        broken: list[str] = []
        joules: dict[str, float] = {}
        for z in self._readable:
            delta = now[z.key] - prev[z.key]
            if delta < 0:
                if z.max_range_uj is None:
                    broken.append(z.key)
                    continue
                delta += z.max_range_uj  # wrapped: (max - prev) + now
            joules[z.key] = delta / 1e6
            rails[z.key] = joules[z.key] / dt
        self._prev, self._prev_t = now, t

        if self._no_total is not None:
            return PowerSample(t_s=t, total_w=None, rails_w=rails, total_reason=self._no_total)
        packages = [z.key for z in self._readable if z.package]
        missing = [k for k in packages if k not in joules]
        if missing:
            return PowerSample(
                t_s=t,
                total_w=None,
                rails_w=rails,
                total_reason=f"counter of {missing} went backwards and its range is unknown",
            )
        step_j = sum(joules[k] for k in packages)
        self._energy_j += step_j
        return PowerSample(t_s=t, total_w=step_j / dt, rails_w=rails, energy_j=self._energy_j)

    def sensors(self) -> list[SensorInfo]:
        """Every zone, with its counter or why it cannot be read."""
        out: list[SensorInfo] = []
        if not self._zones:
            out.append(SensorInfo("rapl", str(self.root / _BASE), problem=self._no_total))
        for z in self._zones:
            role = "total" if z.package else z.name
            if z.problem is not None:
                out.append(SensorInfo(z.key, str(z.path), role, problem=z.problem))
                continue
            try:
                uj = _read_int(z.path / "energy_uj")
            except (OSError, ValueError) as e:
                out.append(SensorInfo(z.key, str(z.path), role, problem=f"{type(e).__name__}: {e}"))
                continue
            out.append(SensorInfo(z.key, str(z.path), role, f"counter {uj / 1e6:.3f} J"))
        return out

    def close(self) -> None:
        """Nothing is held open."""
