"""The board source: a power source plus the battery and temperatures its profile names.

:func:`augment` wraps a built source in a :class:`BoardSource` when the board profile adds
something that exists under the sysfs root: the battery (``with_battery``), thermal zones
and temperature files (:class:`ThermalReader`), throttling from ``throttle_zone``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from edged.config import PowerConfig
from edged.power.base import PowerSample, PowerSource, SensorInfo
from edged.power.nvpmodel import PowerModeReader
from edged.power.profile import PowerFacts


def augment(
    cfg: PowerConfig,
    facts: PowerFacts | None,
    source: PowerSource,
    root: Path,
    *,
    temp_paths: bool = True,
    mode: PowerModeReader | None = None,
) -> PowerSource:
    """``source`` plus what the profile adds: the battery (``with_battery``), thermal zones
    and temperature files, and throttling from ``throttle_zone``. ``source`` as is when
    the profile adds nothing that exists under ``root``."""
    if facts is None:
        return source
    battery: PowerSource | None = None
    if facts.with_battery and source.name != "power_supply":
        from edged.power.power_supply import PowerSupplySource

        supply = PowerSupplySource(
            root=root, battery=cfg.battery or facts.battery, also_total=facts.battery_is_total
        )
        if supply.battery_name is not None:
            battery = supply
    thermal = ThermalReader(root, facts.thermal_zones, facts.temp_paths if temp_paths else {})
    if battery is None and not thermal.present and facts.throttle_zone is None and mode is None:
        return source
    return BoardSource(source, facts, battery=battery, thermal=thermal, mode=mode)


class ThermalReader:
    """Thermal zones of the given types (``/sys/class/thermal/thermal_zone*/type``) and
    other temperature files, all in milli-degrees C, read as degrees C.

    Keys: the zone type (``tj-thermal``; a second zone of the same type gets ``.1``), or
    the name given in ``temp_paths``. Found once, at construction.
    """

    def __init__(
        self, root: Path, zone_types: Sequence[str], temp_paths: Mapping[str, str]
    ) -> None:
        self.root = Path(root)
        self._files: dict[str, Path] = {}
        self._missing: list[tuple[str, Path]] = []
        wanted = set(zone_types)
        seen: dict[str, int] = {}
        zones = sorted(
            (self.root / "sys/class/thermal").glob("thermal_zone*"),
            key=lambda p: (
                int(p.name.removeprefix("thermal_zone") or 0)
                if p.name.removeprefix("thermal_zone").isdigit()
                else 1 << 30
            ),
        )
        for z in zones:
            try:
                kind = (z / "type").read_text().strip()
            except OSError:
                continue
            if kind not in wanted or not (z / "temp").is_file():
                continue
            n = seen.get(kind, 0)
            seen[kind] = n + 1
            self._files[kind if n == 0 else f"{kind}.{n}"] = z / "temp"
        thermal_dir = self.root / "sys/class/thermal"
        self._missing += [(t, thermal_dir) for t in zone_types if t not in seen]
        for key, rel in temp_paths.items():
            path = self.root / rel
            if path.is_file():
                self._files[key] = path
            else:
                self._missing.append((key, path))

    @property
    def present(self) -> bool:
        """True when at least one temperature was found."""
        return bool(self._files)

    def read(self) -> dict[str, float]:
        """Every temperature that reads, deg C (one that fails is left out)."""
        out: dict[str, float] = {}
        for key, path in self._files.items():
            try:
                out[key] = int(path.read_text().strip()) / 1000.0
            except (OSError, ValueError):
                continue
        return out

    def sensors(self) -> list[SensorInfo]:
        """Each temperature with its reading, and the zones of interest that are absent."""
        out: list[SensorInfo] = []
        for key, path in self._files.items():
            try:
                c = int(path.read_text().strip()) / 1000.0
            except (OSError, ValueError) as e:
                out.append(
                    SensorInfo(key, str(path), "thermal", problem=f"{type(e).__name__}: {e}")
                )
                continue
            out.append(SensorInfo(key, str(path), "thermal", f"{c:.1f} C"))
        thermal_dir = self.root / "sys/class/thermal"
        zones = [key for key, where in self._missing if where == thermal_dir]
        if zones:
            out.append(
                SensorInfo(
                    "thermal zones",
                    str(thermal_dir),
                    "thermal",
                    problem=f"not found: {', '.join(zones)}",
                )
            )
        for key, where in self._missing:
            if where != thermal_dir:
                out.append(SensorInfo(key, str(where), "thermal", problem="not found"))
        return out


class BoardSource:
    """A source plus the battery and temperatures its board profile names.

    Power (total, rails, estimated) comes from the wrapped source; battery fields from the
    battery when the wrapped source has none; temperatures are merged; ``throttled`` is the
    wrapped source's, else the profile's ``throttle_zone`` against ``throttle_c``. A battery
    or thermal read that fails leaves those fields unknown rather than failing the sample.
    """

    def __init__(
        self,
        source: PowerSource,
        facts: PowerFacts,
        *,
        battery: PowerSource | None = None,
        thermal: ThermalReader | None = None,
        mode: PowerModeReader | None = None,
    ) -> None:
        self.inner = source
        self.facts = facts
        self.battery = battery
        self.thermal = thermal
        self.mode = mode
        self.name = source.name
        self.estimated = source.estimated
        self.max_rate_hz = source.max_rate_hz

    def read(self) -> PowerSample:
        """Read the source, then the battery and temperatures (may block)."""
        s = self.inner.read()
        temps = dict(s.temps_c)
        changes: dict[str, object] = {}
        if self.battery is not None and s.battery_pct is None:
            try:
                b = self.battery.read()
            except (OSError, ValueError):
                b = None
            if b is not None:
                changes.update(
                    battery_pct=b.battery_pct,
                    charging=b.charging,
                    battery_v=b.battery_v,
                    battery_a=b.battery_a,
                    battery_w=b.battery_w,
                    time_to_empty_s=b.time_to_empty_s,
                )
                temps.update({k: v for k, v in b.temps_c.items() if k not in temps})
                if self.facts.battery_is_total and b.total_w is not None:
                    changes.update(total_w=b.total_w, total_reason=None)
        if self.thermal is not None:
            temps.update(self.thermal.read())
        changes["temps_c"] = temps
        if self.mode is not None:  # cached: the files are read every few seconds
            changes["power_mode"] = self.mode.read()
        if s.throttled is None:
            changes["throttled"] = self.facts.throttled(temps)
        return replace(s, **changes)  # type: ignore[arg-type]

    def sensors(self) -> list[SensorInfo]:
        """The source's sensors, then the battery's and the temperatures."""
        out = list(self.inner.sensors())
        if self.battery is not None:
            out += self.battery.sensors()
        if self.thermal is not None:
            out += self.thermal.sensors()
        if self.mode is not None:
            m = self.mode.read_now()
            where = str(self.mode.root / "etc/nvpmodel.conf")
            clocks = "".join(f", {k} {v:g} MHz" for k, v in m.clocks_mhz.items())
            reading = f"{m.name} (id {m.id}, from {m.source}{clocks})" if m.name else None
            out.append(SensorInfo("power mode", where, "nvpmodel", reading, m.reason))
        return out

    def close(self) -> None:
        """Close the source and the battery."""
        self.inner.close()
        if self.battery is not None:
            self.battery.close()
