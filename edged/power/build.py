"""Building the power source: by kind, through the registry in :mod:`edged.power.base`.

The kind is ``power.source`` unless it is 'auto', else the board profile's, else 'null'
(:func:`source_kind`). :func:`build_source` looks the kind up in the registry, lets the
class build itself from the config and the profile (``from_config``), and adds what the
profile says about the board (:func:`edged.power.board.augment`) unless the kind was
registered without. :func:`open_power` is what the daemon calls: profile, source and
rate in one, with a source that cannot be built turned into the null source with the
reason (energy unknown, serving goes on).

Every source module is imported here so that each registers its kind; the kinds are the
one list :data:`edged.config.PowerSourceKind` (a unit test holds the registry to it).
Building reads sysfs: call these off the event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edged.config import PowerConfig
from edged.errors import ConfigError

# each module registers its kind with @register (the import is what matters)
from edged.power import (  # noqa: F401
    estimate,
    ina3221,
    jtop,
    mqtt_meter,
    null,
    power_supply,
    rapl,
    trace,
)
from edged.power.base import BuildContext, PowerSource, registration, source_kinds
from edged.power.board import augment
from edged.power.detect import select_profile
from edged.power.null import NullSource
from edged.power.nvpmodel import reader_for
from edged.power.profile import HwProfile, load_profiles

log = logging.getLogger("edged.power")


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


def build_source(cfg: PowerConfig, profile: HwProfile | None, root: Path) -> PowerSource:
    """Build the power source for ``cfg`` and ``profile`` reading under ``root``.

    The kind is :func:`source_kind`'s. The profile's facts (rails, battery name, idle/max
    W, temperature files) are mapped onto the source's constructor by its ``from_config``;
    config values (``battery``, ``idle_w``, ``trace_file``) take precedence. Raises
    ConfigError when the kind cannot be built from what is known, and whatever the source
    raises when its sensors are missing (OSError, ValueError).
    """
    kind = source_kind(cfg, profile)
    try:
        reg = registration(kind)
    except KeyError:
        raise ConfigError(
            f"power.source {kind!r} is not a source kind (known: {', '.join(source_kinds())})"
        ) from None
    ctx = BuildContext(cfg, profile, root)
    source = reg.cls.from_config(ctx)
    if not reg.board_extras:
        return source
    mode = None
    if profile is not None:  # nvpmodel, on boards whose profile lists power modes
        modes = [(m.name, m.watts) for m in profile.power_modes]
        mode = reader_for(root, modes, profile.accel.gpu_devfreq)
    return augment(cfg, ctx.facts, source, root, temp_paths=reg.board_temp_paths, mode=mode)


@dataclass(frozen=True, slots=True)
class PowerSetup:
    """What :func:`open_power` built: the source, the profile it used, the rate, Hz."""

    source: PowerSource
    profile: HwProfile | None
    sample_hz: float

    @property
    def profile_name(self) -> str | None:
        """The board profile in use (telemetry's ``profile``), None when none matched."""
        return self.profile.name if self.profile is not None else None


def open_power(cfg: PowerConfig) -> PowerSetup:
    """The board profile (named or detected), its power source and the sampling rate.

    Blocking (reads sysfs). A profile or source that cannot be built gives the null source
    whose reason says why (:func:`unavailable_reason`); this never raises for that.
    """
    profile = None
    try:
        found = select_profile(cfg, load_profiles(cfg.profiles_dir))
        profile = found.profile if found else None
        source = build_source(cfg, profile, cfg.sysfs_root)
    except Exception as e:
        log.error("event=power_source_unavailable error=%r", str(e))
        source = NullSource(reason=unavailable_reason(cfg, profile, e))
    hz = sample_hz(cfg, profile, source)
    name = profile.name if profile is not None else None
    log.info("event=power_source source=%s profile=%s sample_hz=%.1f", source.name, name, hz)
    return PowerSetup(source, profile, hz)
