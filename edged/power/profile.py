"""Board profiles (``hwprofiles/<name>.toml``): the schema and the loader.

A profile holds facts only (rail labels and their roles, the hwmon/iio layout, thermal
zones, power modes, default thresholds), each with its public source in a comment in the
TOML file. :func:`load_profiles` reads every ``*.toml`` in a directory, rejecting unknown
keys; an error names the file and the key. The rest of the power package uses them:

- :mod:`edged.power.detect` recognises the board under a sysfs root;
- :mod:`edged.power.build` builds the power source the config or the profile names;
- :mod:`edged.power.board` adds the profile's battery and temperatures to that source.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edged.config import OffloadSettings, PowerSourceKind, read_toml
from edged.errors import ConfigError

#: Source kinds a profile may name: the config's one list (``power.source`` adds "auto").
SourceKind = PowerSourceKind
#: What a rail measures. ``total`` is the board (or module) input; the others are parts of
#: it, named after what the rail feeds (``cpu_gpu_cv``: one rail for CPU, GPU and the CV
#: accelerators; ``sys``: the carrier's 5 V system supply; ``ddr``: memory).
RailRole = Literal[
    "total", "cpu", "gpu", "soc", "cv", "cpu_gpu_cv", "gpu_soc", "cpu_cv", "ddr", "sys", "other"
]


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

    source: PowerSourceKind = Field(description="Source kind built when power.source is 'auto'.")
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


class AccelFacts(OffloadSettings):
    """``[accel]``: the board's accelerators. The offload keys are defaults for ``[local]``
    (an explicit config value wins); the rest say how to use the GPU and the NPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llama_cmake_args: str | None = Field(
        None,
        description="CMAKE_ARGS that build llama-cpp-python with this board's GPU backend "
        "(edged doctor prints the rebuild command with them).",
    )
    onnx_providers: tuple[str, ...] = Field(
        (), description="onnxruntime execution providers to try, in order (CPU is always last)."
    )
    gpu_devfreq: tuple[str, ...] = Field(
        (), description="devfreq device names of the GPU (sys/class/devfreq/<name>), first found."
    )


class HwProfile(_Model):
    """One board profile file."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    description: str
    detect: DetectRules = Field(default_factory=DetectRules)
    power: PowerFacts
    power_modes: tuple[PowerMode, ...] = ()
    estimate: EstimateFacts | None = None
    router: RouterHints = Field(default_factory=RouterHints)
    accel: AccelFacts = Field(default_factory=AccelFacts)
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
