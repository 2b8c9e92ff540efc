"""Battery and external supplies from ``/sys/class/power_supply`` (source kind ``power_supply``).

Layout (Linux ``Documentation/ABI/testing/sysfs-class-power``), one directory per supply:
``type`` (Battery, Mains, USB, ...), ``status`` (Charging, Discharging, Not charging, Full,
Unknown), ``capacity`` (%), ``voltage_now`` (uV), ``current_now`` (uA), ``power_now`` (uW),
``energy_now``/``energy_full`` (uWh), ``charge_now``/``charge_full`` (uAh), ``temp``
(tenths of a degree C); external supplies have ``online`` (0/1/2). Which of these a battery
has depends on the driver: ACPI batteries that report in energy units give ``power_now`` and
``energy_*`` and no ``current_now``; fuel gauges usually give ``current_now`` and
``charge_*``.

Sign of ``current_now``: the ABI says negative while discharging, but many drivers (ACPI
among them) report the magnitude only. So the sign is taken from ``status`` when it says
Charging or Discharging (``battery_a``/``battery_w`` are positive when discharging into the
board, negative while charging); only when the status gives no direction is the raw ABI
sign used. When ``status`` is missing or Unknown and the board has external supplies, all
of them offline means discharging.

The battery only sees the board's draw while it is discharging, so ``total_w`` is the
battery's discharge power only with ``also_total=True`` (a laptop or board whose only gauge
is the battery) and only while discharging; otherwise it is unknown with the reason.
Files found at construction that later cannot be read make :meth:`read` raise OSError.
"""

from __future__ import annotations

import time
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

_BASE = "sys/class/power_supply"
#: Battery attributes read when present (all integers, kernel units).
_BATTERY_INTS = (
    "capacity",
    "voltage_now",
    "current_now",
    "power_now",
    "energy_now",
    "energy_full",
    "charge_now",
    "charge_full",
    "temp",
)


_read_str = read_sysfs_str
_read_int = read_sysfs_int


@dataclass(frozen=True, slots=True)
class _Battery:
    """One reading of the battery, in SI units (None: the driver does not report it)."""

    status: str | None
    pct: float | None
    v: float | None
    a_raw: float | None  # current_now as the driver signs it, A
    w_raw: float | None  # power_now as the driver signs it, W
    energy_wh: float | None
    energy_full_wh: float | None
    charge_ah: float | None
    charge_full_ah: float | None
    temp_c: float | None


@register("power_supply")
class PowerSupplySource:
    """The battery (and whether external power is present) from the power_supply class.

    ``battery`` names the supply (``BAT0``); without it, the first supply (by name) of type
    Battery whose ``scope`` is not ``Device`` (a wireless mouse's battery is not the
    board's). ``also_total``: report the battery's discharge power as the board total.
    """

    name: str = "power_supply"
    estimated: bool = False
    #: Fuel gauges and ACPI batteries refresh about once a second or slower.
    max_rate_hz: float = 1.0

    @classmethod
    def from_config(cls, ctx: BuildContext) -> PowerSupplySource:
        """The battery ``power.battery`` names, else the profile's; it is also the total."""
        facts = ctx.facts
        battery = ctx.cfg.battery or (facts.battery if facts else None)
        return cls(root=ctx.root, battery=battery, also_total=True)

    def __init__(self, *, root: Path, battery: str | None = None, also_total: bool = False) -> None:
        self.root = Path(root)
        self.also_total = also_total
        base = self.root / _BASE
        supplies = sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []
        names = [p.name for p in supplies]
        self._battery_dir: Path | None = None
        self._no_battery: str | None = None
        if battery is not None:
            if (base / battery).is_dir():
                self._battery_dir = base / battery
            else:
                self._no_battery = f"battery {battery!r} not found in {base}; supplies: {names}"
        else:
            for d in supplies:
                if self._kind(d) == "Battery" and self._scope(d) != "Device":
                    self._battery_dir = d
                    break
            else:
                self._no_battery = f"no battery (power_supply of type Battery) in {base}"
                if names:
                    self._no_battery += f"; supplies: {names}"
        #: Non-battery supplies with an ``online`` file (AC adapter, USB ports).
        self._external = [
            d
            for d in supplies
            if d != self._battery_dir and self._kind(d) != "Battery" and (d / "online").is_file()
        ]
        bd = self._battery_dir
        self._attrs = {a for a in _BATTERY_INTS if bd is not None and (bd / a).is_file()}
        self._has_status = bd is not None and (bd / "status").is_file()

    @staticmethod
    def _kind(d: Path) -> str | None:
        try:
            return _read_str(d / "type")
        except OSError:
            return None

    @staticmethod
    def _scope(d: Path) -> str | None:
        try:
            return _read_str(d / "scope")
        except OSError:
            return None

    @property
    def battery_name(self) -> str | None:
        """The battery in use (None: none found)."""
        return self._battery_dir.name if self._battery_dir is not None else None

    def _read_battery(self, d: Path) -> _Battery:
        raw = {a: _read_int(d / a) for a in self._attrs}

        def scaled(attr: str, factor: float) -> float | None:
            return raw[attr] * factor if attr in raw else None

        return _Battery(
            status=_read_str(d / "status") if self._has_status else None,
            pct=scaled("capacity", 1.0),
            v=scaled("voltage_now", 1e-6),
            a_raw=scaled("current_now", 1e-6),
            w_raw=scaled("power_now", 1e-6),
            energy_wh=scaled("energy_now", 1e-6),
            energy_full_wh=scaled("energy_full", 1e-6),
            charge_ah=scaled("charge_now", 1e-6),
            charge_full_ah=scaled("charge_full", 1e-6),
            temp_c=scaled("temp", 0.1),
        )

    def _external_online(self) -> list[bool]:
        return [_read_int(d / "online") != 0 for d in self._external]

    def read(self) -> PowerSample:
        """Read the battery once; OSError/ValueError when a file found earlier fails."""
        t = time.monotonic()
        if self._battery_dir is None:
            return PowerSample(t_s=t, total_w=None, total_reason=self._no_battery)
        b = self._read_battery(self._battery_dir)
        online = self._external_online()

        discharging = b.status == "Discharging" or (
            b.status in (None, "Unknown") and bool(online) and not any(online)
        )
        if b.status == "Charging":
            charging: bool | None = True
        elif discharging or b.status in ("Not charging", "Full"):
            charging = False
        else:
            charging = None
        # +1: energy flows out of the battery; -1: into it; None: the status does not say.
        sign = 1.0 if discharging else -1.0 if b.status == "Charging" else None

        amps: float | None = None
        if b.a_raw is not None:
            amps = sign * abs(b.a_raw) if sign is not None else -b.a_raw  # ABI: - discharging
        watts: float | None = None
        if b.w_raw is not None:
            s = sign if sign is not None else (-1.0 if amps is not None and amps < 0 else 1.0)
            watts = s * abs(b.w_raw)
        elif b.v is not None and amps is not None:
            watts = b.v * amps
        if amps is None and watts is not None and b.v:
            amps = watts / b.v  # ACPI energy-unit batteries give power, not current

        pct = b.pct
        if pct is None and b.energy_wh is not None and b.energy_full_wh:
            pct = 100.0 * b.energy_wh / b.energy_full_wh
        elif pct is None and b.charge_ah is not None and b.charge_full_ah:
            pct = 100.0 * b.charge_ah / b.charge_full_ah

        tte: float | None = None
        if discharging:
            if b.energy_wh is not None and watts is not None and watts > 0:
                tte = b.energy_wh / watts * 3600.0
            elif b.charge_ah is not None and amps is not None and amps > 0:
                tte = b.charge_ah / amps * 3600.0

        total: float | None = None
        reason: str | None = None
        if not self.also_total:
            reason = "power_supply reports the battery only; the board total needs another source"
        elif not discharging:
            reason = (
                f"battery {b.status or 'status unknown'}: on external power the battery "
                "does not see the board's draw"
            )
        elif watts is None:
            reason = "battery reports neither power_now nor voltage_now with current_now"
        else:
            total = watts

        return PowerSample(
            t_s=t,
            total_w=total,
            battery_pct=pct,
            charging=charging,
            battery_v=b.v,
            battery_a=amps,
            battery_w=watts,
            time_to_empty_s=tte,
            temps_c={"battery": b.temp_c} if b.temp_c is not None else {},
            total_reason=reason,
        )

    def sensors(self) -> list[SensorInfo]:
        """The battery and the external supplies, with readings or problems."""
        out: list[SensorInfo] = []
        base = str(self.root / _BASE)
        if self._battery_dir is None:
            out.append(SensorInfo("battery", base, "battery", problem=self._no_battery))
        else:
            d = self._battery_dir
            try:
                s = self.read()
                parts = [f"{s.battery_pct:.0f}%" if s.battery_pct is not None else "?%"]
                parts.append(_read_str(d / "status") if self._has_status else "status ?")
                if s.battery_w is not None:
                    parts.append(f"{s.battery_w:.2f} W")
                out.append(SensorInfo(d.name, str(d), "battery", " ".join(parts)))
            except (OSError, ValueError) as e:
                out.append(
                    SensorInfo(d.name, str(d), "battery", problem=f"{type(e).__name__}: {e}")
                )
        for d in self._external:
            try:
                state = "online" if _read_int(d / "online") else "offline"
                out.append(SensorInfo(d.name, str(d), "external", state))
            except (OSError, ValueError) as e:
                out.append(
                    SensorInfo(d.name, str(d), "external", problem=f"{type(e).__name__}: {e}")
                )
        return out

    def close(self) -> None:
        """Nothing is held open."""
