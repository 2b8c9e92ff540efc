"""The power-source interface, the sample it returns, and the registry of source kinds.

Units in names: ``_w`` watts, ``_v`` volts, ``_a`` amperes, ``_pct`` percent, ``_c`` degrees
Celsius, ``_s`` seconds. Kernel micro-units (uW, uV, uA, uWh, milli-degrees) are converted
once, at the boundary, by the source that reads them. Unknown is None, with a reason.

A source's :meth:`PowerSource.read` may block (sysfs reads can go over I2C): it is called
from the sampler's own thread, never from the event loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from edged.config import PowerConfig
from edged.power.profile import HwProfile, PowerFacts


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """One sensor a source found, for ``edged doctor``."""

    name: str  # e.g. "VDD_IN", "BAT0", "package-0"
    path: str  # where it was read
    role: str | None = None  # total | cpu | gpu | soc | battery | thermal | ...
    reading: str | None = None  # the current value with its unit, e.g. "4.93 W"
    problem: str | None = None  # why it cannot be read, when it cannot


@dataclass(frozen=True, slots=True)
class PowerModeState:
    """The board's power mode (Jetson nvpmodel) now; None where unknown, with ``reason``."""

    id: int | None = None
    name: str | None = None  # as the board's nvpmodel configuration names it, e.g. "25W"
    watts: float | None = None  # the mode's budget from the board profile; None: no cap/unknown
    source: str | None = None  # "status": nvpmodel's status file; "default": the boot default
    clocks_mhz: dict[str, float] = field(default_factory=dict)  # "gpu", "cpu0", where readable
    reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        """The telemetry object (docs/schemas/telemetry.schema.json, ``power_mode``)."""
        return {
            "id": self.id,
            "name": self.name,
            "watts": self.watts,
            "source": self.source,
            "clocks_mhz": dict(self.clocks_mhz),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class PowerSample:
    """One reading of everything a source knows. ``t_s`` is ``time.monotonic()``."""

    t_s: float
    total_w: float | None  # board (or module) total; None with total_reason when unknown
    rails_w: dict[str, float] = field(default_factory=dict)
    battery_pct: float | None = None
    charging: bool | None = None
    battery_v: float | None = None
    battery_a: float | None = None  # positive: discharging into the board
    battery_w: float | None = None
    time_to_empty_s: float | None = None
    temps_c: dict[str, float] = field(default_factory=dict)
    throttled: bool | None = None
    estimated: bool = False
    total_reason: str | None = None
    #: A cumulative energy counter for the total, J, when the source has one (RAPL's
    #: energy_uj, a trace's exact integral); it lets the meter integrate exactly.
    energy_j: float | None = None
    #: The power mode (nvpmodel) on boards that have one, read at most every few seconds.
    power_mode: PowerModeState | None = None


class PowerSource(Protocol):
    """A source of power readings."""

    #: Registered kind, e.g. "ina3221" (goes into the result's ``energy.source``).
    name: str
    #: True when the numbers are modelled, not measured.
    estimated: bool
    #: Fastest useful sampling rate, Hz (the sampler runs at min(config, this)).
    max_rate_hz: float

    def read(self) -> PowerSample:
        """Read once (may block). Raises OSError/ValueError when the sensor fails."""
        ...

    def sensors(self) -> list[SensorInfo]:
        """What was found, with readings or problems (for ``edged doctor``)."""
        ...

    def close(self) -> None:
        """Release files / handles."""
        ...


@runtime_checkable
class FedSource(Protocol):
    """A source whose readings arrive as messages (``mqtt_meter``): the app subscribes to
    ``power.mqtt_topic`` and hands each payload over (on the event loop; must not block)."""

    def feed(self, payload: bytes) -> None:
        """Take one message from the meter's topic."""
        ...


def read_sysfs_str(path: Path) -> str:
    """A sysfs attribute as text (NULs dropped, whitespace stripped)."""
    return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()


def read_sysfs_int(path: Path) -> int:
    """A sysfs attribute as an integer; ValueError names the file."""
    text = read_sysfs_str(path)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: not an integer: {text!r}") from None


_OPEN: dict[Path, int] = {}


def read_sysfs_int_kept_open(path: Path) -> int:
    """Like :func:`read_sysfs_int`, but keeps the file open and re-reads it with ``pread``:
    a 50 Hz sampler then costs a few microseconds a file instead of an open and a close.
    Only the sampler thread calls it. A file that went away (unlinked, device gone) is
    opened again, so a vanished sensor still raises."""
    fd = _OPEN.get(path)
    try:
        if fd is not None and os.fstat(fd).st_nlink == 0:
            raise FileNotFoundError(path)
        if fd is None:
            fd = _OPEN[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        raw = os.pread(fd, 64, 0)
    except OSError:
        close_kept_open([path])
        return read_sysfs_int(path)  # the slow path raises the real error, or reopens
    text = raw.decode("utf-8", "replace").replace("\x00", "").strip()
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: not an integer: {text!r}") from None


def close_kept_open(paths: Iterable[Path]) -> None:
    """Close files :func:`read_sysfs_int_kept_open` holds."""
    for p in paths:
        fd = _OPEN.pop(p, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a source is built from: the config, the board profile (None: no profile), and
    the sysfs root its files are under."""

    cfg: PowerConfig
    profile: HwProfile | None
    root: Path

    @property
    def facts(self) -> PowerFacts | None:
        """The profile's ``[power]`` facts, None without a profile."""
        return self.profile.power if self.profile is not None else None

    @property
    def profiles_dir(self) -> Path:
        """The directory the profile was read from (its trace files are relative to it)."""
        if self.profile is not None and self.profile.path is not None:
            return self.profile.path.parent
        return self.cfg.profiles_dir


class SourceClass(Protocol):
    """A registered source class: it builds itself from a :class:`BuildContext`."""

    def from_config(self, ctx: BuildContext) -> PowerSource:
        """Build the source, mapping the profile's facts onto its constructor (config
        values first). ConfigError when it cannot be built from what is known; whatever
        its sensors raise when they are missing (OSError, ValueError)."""
        ...


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered kind: its class and what the board profile adds to it."""

    cls: SourceClass
    #: Add the profile's battery, thermal zones and throttling (edged.power.board).
    board_extras: bool = True
    #: Among those, the profile's ``temp_paths`` (False: the source reads them itself).
    board_temp_paths: bool = True


S = TypeVar("S", bound=SourceClass)
_REGISTRY: dict[str, Registration] = {}


def register(
    kind: str, *, board_extras: bool = True, board_temp_paths: bool = True
) -> Callable[[S], S]:
    """Class decorator: make a source kind constructible by name (``kind`` is one of
    :data:`edged.config.PowerSourceKind`). ``board_extras=False``: built as is, without
    the profile's battery and temperatures; ``board_temp_paths=False``: without the
    profile's temperature files (the source reads them)."""

    def deco(cls: S) -> S:
        _REGISTRY[kind] = Registration(cls, board_extras, board_temp_paths)
        return cls

    return deco


def source_kinds() -> list[str]:
    """The registered kinds (every source module imported: edged.power.build does that)."""
    return sorted(_REGISTRY)


def registration(kind: str) -> Registration:
    """The registration of ``kind``; KeyError names the known kinds."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown power source {kind!r}; known: {source_kinds()}") from None


def factory(kind: str) -> SourceClass:
    """The class registered for ``kind``; KeyError names the known kinds."""
    return registration(kind).cls
