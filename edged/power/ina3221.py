"""NVIDIA Jetson INA3221 power monitors, read from sysfs (source kind ``ina3221``).

Two kernel layouts exist, and both are read:

- **hwmon** (mainline ``ina3221`` driver; JetPack 5 and later, Orin): one directory per chip,
  ``/sys/bus/i2c/drivers/ina3221/<bus>-<addr>/hwmon/hwmon<K>/``, also reachable as
  ``/sys/class/hwmon/hwmon<K>/`` whose ``name`` is ``ina3221``. Per channel N (1..3):
  ``in<N>_label`` (rail name), ``in<N>_input`` (bus voltage, mV), ``curr<N>_input``
  (current, mA); power is V x I. Channel 7 is the *sum of shunt voltages* (``in7_label`` is
  "sum of shunt voltages", ``in7_input`` in uV) and ``curr4_input`` the summed current; they
  are not rails and are skipped, as are channels labelled ``NC`` (not connected) or with
  ``in<N>_enable`` = 0. Source: Linux ``Documentation/hwmon/ina3221.rst``.
- **iio** (NVIDIA's older ``ina3221x`` driver; JetPack 4, Xavier/Nano/TX2):
  ``/sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/iio:device<K>/`` with ``rail_name_<N>``,
  ``in_power<N>_input`` (mW), ``in_voltage<N>_input`` (mV), ``in_current<N>_input`` (mA),
  N = 0..2. The driver's own power reading is used.

Channels are found once, at construction; a file found then that cannot be read later makes
:meth:`Ina3221Source.read` raise OSError (the sampler records a gap with the reason).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edged.power.base import (
    BuildContext,
    PowerSample,
    SensorInfo,
    close_kept_open,
    read_sysfs_int,
    read_sysfs_int_kept_open,
    read_sysfs_str,
    register,
)

#: Labels of channels with nothing connected (NVIDIA device trees use "NC").
_NOT_CONNECTED = {"NC"}
#: The hwmon channel number of the INA3221 sum of shunt voltages.
_SUM_CHANNEL = 7

_HWMON_DRIVER_DIR = "sys/bus/i2c/drivers/ina3221"
_HWMON_CLASS_DIR = "sys/class/hwmon"
_IIO_DRIVER_DIR = "sys/bus/i2c/drivers/ina3221x"

_IN_LABEL = re.compile(r"^in(\d+)_label$")
_RAIL_NAME = re.compile(r"^rail_name_(\d+)$")


_read_str = read_sysfs_str
_read_int = read_sysfs_int
_read_fast = read_sysfs_int_kept_open


@dataclass(frozen=True, slots=True)
class _Channel:
    label: str
    device: str  # "<bus>-<addr>", e.g. "1-0040"
    volt_mv: Path | None
    curr_ma: Path | None
    power_mw: Path | None  # iio layout only

    def read(self) -> tuple[float, float | None, float | None]:
        """(watts, volts, amperes); volts/amperes None where the layout gives power only."""
        v = _read_fast(self.volt_mv) / 1e3 if self.volt_mv is not None else None
        a = _read_fast(self.curr_ma) / 1e3 if self.curr_ma is not None else None
        if self.power_mw is not None:
            return _read_fast(self.power_mw) / 1e3, v, a
        if v is None or a is None:  # not built without both (see _hwmon_channels)
            raise ValueError(f"{self.label}: no voltage/current files")
        return v * a, v, a

    @property
    def path(self) -> str:
        first = self.power_mw or self.curr_ma or self.volt_mv
        return str(first.parent) if first is not None else ""


def _hwmon_dirs(root: Path) -> list[tuple[str, Path]]:
    """(device, hwmon dir) of every ina3221 hwmon chip, each once."""
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()

    def add(device: str, d: Path) -> None:
        key = d.resolve()
        if key in seen:
            return
        seen.add(key)
        found.append((device, d))

    for d in sorted((root / _HWMON_DRIVER_DIR).glob("*/hwmon/hwmon*")):
        if d.is_dir():
            add(d.parent.parent.name, d)
    for d in sorted((root / _HWMON_CLASS_DIR).glob("hwmon*")):
        try:
            name = _read_str(d / "name")
        except OSError:
            continue
        if name != "ina3221":
            continue
        real = d.resolve()
        # /sys/class/hwmon/hwmonK -> .../<bus>-<addr>/hwmon/hwmonK on a real system
        device = real.parent.parent.name if real.parent.name == "hwmon" else d.name
        add(device, d)
    return found


def _number(regex: re.Pattern[str], path: Path) -> int:
    m = regex.match(path.name)
    return int(m.group(1)) if m else -1


class _Found:
    """Channels and the reasons others were left out, from one scan."""

    def __init__(self) -> None:
        self.channels: list[_Channel] = []
        self.skipped: list[SensorInfo] = []

    def add(self, ch: _Channel) -> None:
        taken = {c.label for c in self.channels}
        if ch.label in taken:  # two chips with the same label: keep both, apart
            ch = _Channel(f"{ch.label}@{ch.device}", ch.device, ch.volt_mv, ch.curr_ma, ch.power_mw)
        self.channels.append(ch)


def _scan_hwmon(root: Path, found: _Found) -> None:
    for device, d in _hwmon_dirs(root):
        labels = sorted(d.glob("in*_label"), key=lambda p: _number(_IN_LABEL, p))
        for label_path in labels:
            n = _number(_IN_LABEL, label_path)
            if n < 0:
                continue
            try:
                label = _read_str(label_path)
            except OSError as e:
                found.skipped.append(
                    SensorInfo(label_path.name, str(label_path), problem=f"label unreadable: {e}")
                )
                continue
            if n == _SUM_CHANNEL or "sum" in label.lower() or label in _NOT_CONNECTED:
                continue
            enable = d / f"in{n}_enable"
            try:
                if enable.is_file() and _read_str(enable) == "0":
                    continue
            except OSError:
                pass
            volt, curr = d / f"in{n}_input", d / f"curr{n}_input"
            if not (volt.is_file() and curr.is_file()):
                found.skipped.append(
                    SensorInfo(label, str(d), problem=f"in{n}_input or curr{n}_input missing")
                )
                continue
            found.add(_Channel(label, device, volt, curr, None))


def _scan_iio(root: Path, found: _Found) -> None:
    for d in sorted((root / _IIO_DRIVER_DIR).glob("*/iio:device*")):
        device = d.parent.name
        for name_path in sorted(d.glob("rail_name_*"), key=lambda p: _number(_RAIL_NAME, p)):
            n = _number(_RAIL_NAME, name_path)
            if n < 0:
                continue
            try:
                label = _read_str(name_path)
            except OSError as e:
                found.skipped.append(
                    SensorInfo(name_path.name, str(name_path), problem=f"rail name unreadable: {e}")
                )
                continue
            if not label or label in _NOT_CONNECTED or "sum" in label.lower():
                continue
            power = d / f"in_power{n}_input"
            volt, curr = d / f"in_voltage{n}_input", d / f"in_current{n}_input"
            have_vi = volt.is_file() and curr.is_file()
            if not power.is_file() and not have_vi:
                found.skipped.append(
                    SensorInfo(label, str(d), problem=f"in_power{n}_input missing")
                )
                continue
            found.add(
                _Channel(
                    label,
                    device,
                    volt if volt.is_file() else None,
                    curr if curr.is_file() else None,
                    power if power.is_file() else None,
                )
            )


@register("ina3221")
class Ina3221Source:
    """Jetson INA3221 rails (hwmon or iio layout).

    ``rails_w`` holds every connected rail by its label, the total rail included. The
    total is ``total_rail`` when given, else the sum of ``total_sum`` (boards with no single
    input rail, such as AGX Orin), else unknown with the reason. ``rails`` maps labels to
    roles (``cpu``, ``gpu``, ...) for :meth:`sensors`; it does not filter.
    """

    name: str = "ina3221"
    estimated: bool = False
    #: The INA3221 converts in well under 10 ms per channel at the drivers' defaults.
    max_rate_hz: float = 100.0

    @classmethod
    def from_config(cls, ctx: BuildContext) -> Ina3221Source:
        """The profile's total rail (or rails summed) and rail roles."""
        facts = ctx.facts
        return cls(
            root=ctx.root,
            total_rail=facts.total_rail if facts else None,
            total_sum=list(facts.total_sum) if facts and facts.total_sum is not None else None,
            rails=dict(facts.rails) if facts else {},
        )

    def __init__(
        self,
        *,
        root: Path,
        total_rail: str | None = None,
        total_sum: Sequence[str] | None = None,
        rails: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(total_sum, str):
            raise TypeError("total_sum is a list of rail labels, not one string")
        self.root = Path(root)
        self.total_rail = total_rail
        self.total_sum = list(total_sum) if total_sum else None
        self.roles = dict(rails or {})
        found = _Found()
        _scan_hwmon(self.root, found)
        _scan_iio(self.root, found)
        self._channels = found.channels
        self._skipped = found.skipped
        labels = [c.label for c in self._channels]
        self._config_problem: str | None = None
        if not self._channels:
            self._config_problem = (
                f"no INA3221 power monitor found under {self.root} ({_HWMON_DRIVER_DIR}, "
                f"{_HWMON_CLASS_DIR}/*/name = ina3221, {_IIO_DRIVER_DIR})"
            )
        elif total_rail is not None and total_rail not in labels:
            self._config_problem = f"total rail {total_rail!r} not found; rails: {labels}"
        elif total_rail is None and self.total_sum is not None:
            missing = [r for r in self.total_sum if r not in labels]
            if missing:
                self._config_problem = f"rail(s) {missing} of total_sum not found; rails: {labels}"
        elif total_rail is None and self.total_sum is None:
            self._config_problem = f"no total configured (total_rail or total_sum); rails: {labels}"

    @property
    def rail_labels(self) -> list[str]:
        """Labels of the rails found, in discovery order."""
        return [c.label for c in self._channels]

    def read(self) -> PowerSample:
        """Read every rail once; OSError/ValueError when a rail cannot be read."""
        t = time.monotonic()
        rails = {ch.label: ch.read()[0] for ch in self._channels}
        if self._config_problem is not None:
            return PowerSample(
                t_s=t, total_w=None, rails_w=rails, total_reason=self._config_problem
            )
        if self.total_rail is not None:
            total = rails[self.total_rail]
        else:
            assert self.total_sum is not None
            total = sum(rails[r] for r in self.total_sum)
        return PowerSample(t_s=t, total_w=total, rails_w=rails)

    def _role(self, label: str) -> str | None:
        if label in self.roles:
            return self.roles[label]
        if label == self.total_rail:
            return "total"
        return None

    def sensors(self) -> list[SensorInfo]:
        """Each rail with its reading or the reason it cannot be read."""
        out: list[SensorInfo] = []
        if not self._channels:
            out.append(
                SensorInfo(
                    "ina3221", str(self.root / _HWMON_DRIVER_DIR), problem=self._config_problem
                )
            )
        for ch in self._channels:
            try:
                w, v, a = ch.read()
            except (OSError, ValueError) as e:
                out.append(
                    SensorInfo(
                        ch.label, ch.path, self._role(ch.label), problem=f"{type(e).__name__}: {e}"
                    )
                )
                continue
            reading = f"{w:.2f} W"
            if v is not None and a is not None:
                reading += f" ({v:.3f} V, {a:.3f} A)"
            out.append(SensorInfo(ch.label, ch.path, self._role(ch.label), reading))
        out.extend(self._skipped)
        if self._channels and self._config_problem is not None:
            out.append(SensorInfo("total", str(self.root), "total", problem=self._config_problem))
        return out

    def close(self) -> None:
        """Close the rail files kept open between reads."""
        close_kept_open(
            p for c in self._channels for p in (c.volt_mv, c.curr_ma, c.power_mw) if p is not None
        )
