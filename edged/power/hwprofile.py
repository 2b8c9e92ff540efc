"""Board profiles (``hwprofiles/<name>.toml``): what a board is, how to recognise it, and
which power source to build for it.

A profile holds facts only (rail labels and their roles, the hwmon/iio layout, thermal
zones, power modes, default thresholds), each with its public source in a comment in the
TOML file. Three functions use them:

- :func:`load_profiles` reads every ``*.toml`` in a directory, rejecting unknown keys; an
  error names the file and the key.
- :func:`detect` recognises the board under a sysfs root from the device-tree model and
  compatible strings and from DMI; :func:`detect_reason` says which rule matched.
- :func:`build_source` builds the :class:`~edged.power.base.PowerSource` named by the
  config (``power.source``), else by the profile, else the null source.

Every path is relative to the sysfs root (``power.sysfs_root``), so tests point it at a
fake tree under ``tests/fixtures/sysfs/<board>/``. Reading the root is cheap (a few small
files) but it is still file I/O: call these off the event loop.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edged.config import PowerConfig, read_toml
from edged.errors import ConfigError
from edged.power.base import PowerSample, PowerSource, SensorInfo

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - exercised on 3.10 only
    pass

#: Source kinds a profile may name (``power.source`` in the config adds "auto").
SourceKind = Literal["ina3221", "power_supply", "rapl", "jtop", "trace", "estimate", "mqtt", "null"]
#: What a rail measures. ``total`` is the board (or module) input; the others are parts of
#: it, named after what the rail feeds (``cpu_gpu_cv``: one rail for CPU, GPU and the CV
#: accelerators; ``sys``: the carrier's 5 V system supply; ``ddr``: memory).
RailRole = Literal[
    "total", "cpu", "gpu", "soc", "cv", "cpu_gpu_cv", "gpu_soc", "cpu_cv", "ddr", "sys", "other"
]

#: Device-tree and DMI files read by :func:`detect`, relative to the sysfs root.
DT_MODEL = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
DT_COMPATIBLE = ("proc/device-tree/compatible", "sys/firmware/devicetree/base/compatible")
DMI_DIR = "sys/class/dmi/id"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectRules(_Model):
    """How to recognise the board. Empty: never detected (select it with ``power.profile``)."""

    compatible: tuple[str, ...] = Field(
        (), description="Exact entries of /proc/device-tree/compatible (NUL-separated)."
    )
    model: tuple[str, ...] = Field(
        (), description="Substrings of /proc/device-tree/model (case-insensitive)."
    )
    dmi_product: tuple[str, ...] = Field(
        (), description="Substrings of /sys/class/dmi/id/product_name (case-insensitive)."
    )
    dmi_vendor: tuple[str, ...] = Field(
        (), description="Substrings of /sys/class/dmi/id/sys_vendor (case-insensitive)."
    )
    dmi_any: bool = Field(
        False, description="Fallback: any machine with DMI, when nothing more specific matches."
    )

    @property
    def empty(self) -> bool:
        """True when no rule is set: the profile is never detected."""
        return not (
            self.compatible or self.model or self.dmi_product or self.dmi_vendor or self.dmi_any
        )


class Ina3221Facts(_Model):
    """Where the INA3221 power monitors are and how the kernel exposes them.

    A record for people reading the profile and for ``edged doctor``: the ina3221 source
    finds the chips itself (both layouts, ``NC`` and sum channels skipped).
    """

    layout: Literal["hwmon", "iio"] = Field(
        "hwmon",
        description="'hwmon': mainline driver (in<N>_label, in<N>_input mV, curr<N>_input mA); "
        "'iio': NVIDIA's older ina3221x driver (rail_name_<N>, in_power<N>_input mW, ...).",
    )
    driver_dir: str = Field(
        "sys/bus/i2c/drivers/ina3221",
        description="Driver directory under the sysfs root; devices are <bus>-<addr> in it.",
    )
    devices: tuple[str, ...] = Field(
        ("1-0040",), min_length=1, description="I2C devices (<bus>-<4-digit hex address>)."
    )
    skip_labels: tuple[str, ...] = Field(
        ("NC",), description="Channel labels that are not connected (skipped)."
    )


class PowerFacts(_Model):
    """How power, battery and temperature are read on this board."""

    source: SourceKind = Field(description="Source kind built when power.source is 'auto'.")
    sample_hz: float = Field(gt=0, le=1000, description="Useful sampling rate, Hz.")
    ina3221: Ina3221Facts | None = None
    total_rail: str | None = Field(None, description="Label of the rail that is the total.")
    total_sum: tuple[str, ...] | None = Field(
        None, description="Labels summed into the total when no single rail is (AGX Orin)."
    )
    rails: dict[str, RailRole] = Field(default_factory=dict, description="Rail label -> role.")
    battery: str | None = Field(None, description="power_supply name of the battery, if any.")
    battery_is_total: bool = Field(
        False,
        description="The battery's discharge power is the board total (laptops on battery).",
    )
    with_battery: bool = Field(
        False,
        description="Also read battery level/charging from power_supply when the source "
        "itself is another kind (x86: RAPL for power, the battery for its level).",
    )
    thermal_zones: tuple[str, ...] = Field(
        (), description="Thermal zone types of interest (/sys/class/thermal/*/type)."
    )
    temp_paths: dict[str, str] = Field(
        default_factory=dict,
        description="Other temperature files: name -> file (milli-degrees C) under the root.",
    )
    throttle_zone: str | None = Field(
        None, description="Zone type (or temp_paths name) whose heat means throttling."
    )
    throttle_c: float | None = Field(
        None, description="Throttling starts at this temperature of throttle_zone, deg C."
    )
    trace: str | None = Field(
        None, description="source='trace': CSV (t_s,power_w), relative to the profiles dir."
    )

    @model_validator(mode="after")
    def _consistent(self) -> PowerFacts:
        if self.total_rail is not None and self.total_sum is not None:
            raise ValueError("give total_rail or total_sum, not both")
        named = [self.total_rail] if self.total_rail else list(self.total_sum or ())
        missing = [r for r in named if self.rails and r not in self.rails]
        if missing:
            raise ValueError(f"total rail(s) {missing} not in [power.rails]")
        if (self.throttle_zone is None) != (self.throttle_c is None):
            raise ValueError("throttle_zone and throttle_c go together")
        if self.source == "ina3221" and self.ina3221 is None:
            raise ValueError("source 'ina3221' needs a [power.ina3221] table")
        if self.source == "trace" and self.trace is None:
            raise ValueError("source 'trace' needs trace = '<csv>'")
        return self

    def throttled(self, temps_c: Mapping[str, float]) -> bool | None:
        """Whether ``temps_c`` (keyed by zone type or path) shows throttling; None: unknown."""
        if self.throttle_zone is None or self.throttle_c is None:
            return None
        t = temps_c.get(self.throttle_zone)
        return None if t is None else t >= self.throttle_c


class PowerMode(_Model):
    """One nvpmodel (or similar) power mode."""

    name: str = Field(description="Mode name as the board's tool prints it.")
    watts: float | None = Field(None, gt=0, description="Power budget of the mode, W.")
    note: str | None = None


class EstimateFacts(_Model):
    """For boards without power sensors: a model of draw from load."""

    idle_w: float = Field(ge=0, description="Board draw when idle, W.")
    max_w: float = Field(gt=0, description="Board draw at full load, W.")

    @model_validator(mode="after")
    def _ordered(self) -> EstimateFacts:
        if self.max_w <= self.idle_w:
            raise ValueError("max_w must be above idle_w")
        return self


class RouterHints(_Model):
    """Suggested routing thresholds for this board (policies may override)."""

    battery_low_pct: float | None = Field(None, ge=0, le=100)
    battery_hysteresis_pct: float | None = Field(None, ge=0, le=50)
    power_budget_w: float | None = Field(None, gt=0)
    local_j_per_token: float | None = Field(None, gt=0)
    radio_j_per_request: float | None = Field(None, gt=0)


class HwProfile(_Model):
    """One board profile file."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    description: str
    detect: DetectRules = Field(default_factory=DetectRules)
    power: PowerFacts
    power_modes: tuple[PowerMode, ...] = ()
    estimate: EstimateFacts | None = None
    router: RouterHints = Field(default_factory=RouterHints)
    #: The file it was read from (set by load_profiles; not a TOML key).
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _estimate_when_estimated(self) -> HwProfile:
        if self.power.source == "estimate" and self.estimate is None:
            raise ValueError("source 'estimate' needs an [estimate] table (idle_w, max_w)")
        return self


def load_profile(path: Path) -> HwProfile:
    """Read one profile; ConfigError names the file and the key."""
    data = read_toml(path, "board profile")
    if "path" in data:
        raise ConfigError(f"{path}: path: unknown key")
    try:
        profile = HwProfile.model_validate({**data, "path": path})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{path}: {where}: {msg.removeprefix('Value error, ')}")
        raise ConfigError("\n".join(lines)) from e
    if profile.name != path.stem:
        raise ConfigError(f"{path}: name: {profile.name!r} must match the file name")
    return profile


def load_profiles(directory: Path) -> dict[str, HwProfile]:
    """Every ``*.toml`` in ``directory``, by name. ConfigError names the file and the key."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: board profile directory not found")
    profiles: dict[str, HwProfile] = {}
    errors: list[str] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            p = load_profile(path)
        except ConfigError as e:
            errors.append(str(e))
            continue
        profiles[p.name] = p
    if errors:
        raise ConfigError("\n".join(errors))
    return profiles


@dataclass(frozen=True, slots=True)
class BoardFacts:
    """What the sysfs root says about the machine (None: the file is absent)."""

    model: str | None
    compatible: tuple[str, ...]
    dmi_product: str | None
    dmi_vendor: str | None

    @property
    def has_dmi(self) -> bool:
        """True on machines with DMI (x86, some arm64 servers)."""
        return self.dmi_product is not None or self.dmi_vendor is not None


@dataclass(frozen=True, slots=True)
class Detection:
    """The detected profile and the rule that matched, for ``edged doctor``."""

    profile: HwProfile
    rule: str  # "compatible" | "model" | "dmi_product" | "dmi_vendor" | "dmi_any"
    value: str  # what matched: the compatible entry, the model substring, ...

    @property
    def reason(self) -> str:
        """One line: which rule matched what."""
        what = {
            "compatible": "device-tree compatible",
            "model": "device-tree model contains",
            "dmi_product": "DMI product_name contains",
            "dmi_vendor": "DMI sys_vendor contains",
            "dmi_any": "DMI present, nothing more specific matched",
            "configured": "power.profile in the config is",
        }[self.rule]
        return what if self.rule == "dmi_any" else f"{what} {self.value!r}"


def _read_text(root: Path, candidates: tuple[str, ...] | str) -> str | None:
    for rel in (candidates,) if isinstance(candidates, str) else candidates:
        try:
            return (root / rel).read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
    return None


def read_board_facts(root: Path) -> BoardFacts:
    """Read the device-tree model/compatible and DMI names under ``root``."""
    model = _read_text(root, DT_MODEL)
    compat = _read_text(root, DT_COMPATIBLE)
    product = _read_text(root, f"{DMI_DIR}/product_name")
    vendor = _read_text(root, f"{DMI_DIR}/sys_vendor")
    return BoardFacts(
        model=model.replace("\x00", "").strip() if model is not None else None,
        compatible=tuple(c.strip() for c in (compat or "").split("\x00") if c.strip()),
        dmi_product=product.strip() if product is not None else None,
        dmi_vendor=vendor.strip() if vendor is not None else None,
    )


#: Rule strength: an exact compatible entry beats a model substring beats DMI names beats
#: the DMI fallback.
_RANK = {"compatible": 4, "model": 3, "dmi_product": 2, "dmi_vendor": 2, "dmi_any": 1}


def _match(rules: DetectRules, facts: BoardFacts) -> tuple[str, str] | None:
    for c in rules.compatible:
        if c in facts.compatible:
            return "compatible", c
    model = (facts.model or "").lower()
    for m in rules.model:
        if facts.model is not None and m.lower() in model:
            return "model", m
    product = (facts.dmi_product or "").lower()
    for p in rules.dmi_product:
        if facts.dmi_product is not None and p.lower() in product:
            return "dmi_product", p
    vendor = (facts.dmi_vendor or "").lower()
    for v in rules.dmi_vendor:
        if facts.dmi_vendor is not None and v.lower() in vendor:
            return "dmi_vendor", v
    if rules.dmi_any and facts.has_dmi:
        return "dmi_any", facts.dmi_product or facts.dmi_vendor or ""
    return None


def detect_reason(root: Path, profiles: Mapping[str, HwProfile]) -> Detection | None:
    """The best-matching profile for the machine under ``root``, with the rule that matched.

    The strongest rule wins (compatible > model > DMI names > DMI present); among equals,
    the first profile by name. Profiles without [detect] rules (``sim``) never match.
    """
    facts = read_board_facts(root)
    best: Detection | None = None
    for name in sorted(profiles):
        profile = profiles[name]
        if profile.detect.empty:
            continue
        hit = _match(profile.detect, facts)
        if hit is None:
            continue
        if best is None or _RANK[hit[0]] > _RANK[best.rule]:
            best = Detection(profile, hit[0], hit[1])
    return best


def detect(root: Path, profiles: Mapping[str, HwProfile]) -> HwProfile | None:
    """The profile of the machine under ``root`` (None: nothing matched)."""
    found = detect_reason(root, profiles)
    return found.profile if found else None


def select_profile(
    cfg: PowerConfig, profiles: Mapping[str, HwProfile], root: Path | None = None
) -> Detection | None:
    """The profile named by ``cfg.profile``, or the detected one when it is 'auto'.

    ``root`` defaults to ``cfg.sysfs_root``. ConfigError when a named profile is unknown.
    """
    if cfg.profile != "auto":
        try:
            return Detection(profiles[cfg.profile], "configured", cfg.profile)
        except KeyError:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(
                f"power.profile: no board profile {cfg.profile!r} in {cfg.profiles_dir} "
                f"(known: {known})"
            ) from None
    return detect_reason(cfg.sysfs_root if root is None else root, profiles)


def source_kind(cfg: PowerConfig, profile: HwProfile | None) -> str:
    """The kind build_source builds: cfg.source unless 'auto', else the profile's, else null."""
    if cfg.source != "auto":
        return cfg.source
    return profile.power.source if profile is not None else "null"


def unavailable_reason(cfg: PowerConfig, profile: HwProfile | None, error: BaseException) -> str:
    """``power.reason`` when the power source could not be built (or the profile chosen).

    It says whether a source was configured: with ``power.source = "auto"`` none was, and a
    source the detected board profile suggests that fails is reported as such, not as a
    configured source that failed.
    """
    if cfg.source != "auto":
        return f"power source {cfg.source} failed: {error}"
    if profile is None:
        if cfg.profile != "auto":
            return f"board profile {cfg.profile} unusable: {error}"
        return f"no power source configured (board detection failed: {error})"
    kind = profile.power.source
    if cfg.profile != "auto":
        return f"power source {kind} of board profile {profile.name} failed: {error}"
    return (
        f"no power source configured (the detected board profile {profile.name} "
        f"suggests {kind}, which failed: {error})"
    )


def sample_hz(cfg: PowerConfig, profile: HwProfile | None, source: PowerSource) -> float:
    """The rate to sample at, Hz: the lowest of the config's, the profile's and the source's."""
    rates = [cfg.sample_hz, source.max_rate_hz]
    if profile is not None:
        rates.append(profile.power.sample_hz)
    return min(rates)


def _profiles_dir(cfg: PowerConfig, profile: HwProfile | None) -> Path:
    if profile is not None and profile.path is not None:
        return profile.path.parent
    return cfg.profiles_dir


def build_source(cfg: PowerConfig, profile: HwProfile | None, root: Path) -> PowerSource:
    """Build the power source for ``cfg`` and ``profile`` reading under ``root``.

    The kind is ``cfg.source`` unless it is 'auto', else the profile's, else 'null'. The
    profile's facts (rails, battery name, idle/max W, temperature files) are mapped onto
    the source's constructor; config values (``battery``, ``idle_w``, ``trace_file``) take
    precedence. Raises ConfigError when the kind cannot be built from what is known, and
    whatever the source raises when its sensors are missing (OSError, ValueError).
    """
    kind = source_kind(cfg, profile)
    facts = profile.power if profile is not None else None

    if kind == "null":
        from edged.power.null import NullSource

        return NullSource()

    if kind == "jtop":
        from edged.power.jtop import JtopSource

        return JtopSource(root=root)

    if kind == "mqtt":
        from edged.power.mqtt_meter import MqttMeterSource

        if not cfg.mqtt_topic:
            raise ConfigError("power.source 'mqtt' needs power.mqtt_topic (the meter's topic)")
        return MqttMeterSource(topic=cfg.mqtt_topic, root=root)

    source: PowerSource
    own_temp_paths = False
    if kind == "ina3221":
        from edged.power.ina3221 import Ina3221Source

        source = Ina3221Source(
            root=root,
            total_rail=facts.total_rail if facts else None,
            total_sum=list(facts.total_sum) if facts and facts.total_sum is not None else None,
            rails=dict(facts.rails) if facts else {},
        )
    elif kind == "power_supply":
        from edged.power.power_supply import PowerSupplySource

        battery = cfg.battery or (facts.battery if facts else None)
        source = PowerSupplySource(root=root, battery=battery, also_total=True)
    elif kind == "rapl":
        from edged.power.rapl import RaplSource

        source = RaplSource(root=root)
    elif kind == "trace":
        from edged.power.trace import TraceSource

        path = cfg.trace_file
        if path is None and facts is not None and facts.trace is not None:
            path = _profiles_dir(cfg, profile) / facts.trace
        if path is None:
            raise ConfigError(
                "power.source 'trace' needs power.trace_file (a CSV with header t_s,power_w) "
                "or a board profile with power.trace"
            )
        source = TraceSource(path=path, root=root, clock=time.monotonic)
    elif kind == "estimate":
        from edged.power.estimate import EstimateSource

        est = profile.estimate if profile is not None else None
        if est is None:
            raise ConfigError(
                "power.source 'estimate' needs a board profile with [estimate] idle_w and "
                "max_w (power.profile)"
            )
        idle_w = cfg.idle_w if cfg.idle_w is not None else est.idle_w
        temp_paths = dict(facts.temp_paths) if facts else {}
        source = EstimateSource(root=root, idle_w=idle_w, max_w=est.max_w, temp_paths=temp_paths)
        own_temp_paths = True
    else:
        raise ConfigError(
            f"power.source {kind!r} is not built from a board profile "
            "(built here: null, ina3221, power_supply, rapl, trace, estimate, jtop, mqtt)"
        )
    return _augment(cfg, facts, source, root, temp_paths=not own_temp_paths)


def _augment(
    cfg: PowerConfig,
    facts: PowerFacts | None,
    source: PowerSource,
    root: Path,
    *,
    temp_paths: bool = True,
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
    if battery is None and not thermal.present and facts.throttle_zone is None:
        return source
    return BoardSource(source, facts, battery=battery, thermal=thermal)


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
            out.append(SensorInfo("thermal zones", str(thermal_dir), "thermal",
                                  problem=f"not found: {', '.join(zones)}"))  # fmt: skip
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
    ) -> None:
        self.inner = source
        self.facts = facts
        self.battery = battery
        self.thermal = thermal
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
        return out

    def close(self) -> None:
        """Close the source and the battery."""
        self.inner.close()
        if self.battery is not None:
            self.battery.close()
