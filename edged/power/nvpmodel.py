"""The Jetson power mode (nvpmodel): which mode is on, its name, and the clocks now. Read only:
edged never changes the mode.

Facts (NVIDIA Jetson Linux Developer Guide, "Platform Power and Performance", and the
format header of NVIDIA's nvpmodel configuration files):

- ``/etc/nvpmodel.conf`` (a link to the board's file) defines each mode in a section
  header ``< POWER_MODEL ID=<id> NAME=<name> >`` and the boot default in
  ``< PM_CONFIG DEFAULT=<id> >``. Ids differ between modules and releases (15W is 0 on an
  Orin Nano Super devkit): the name comes from this file, never from a table of ids.
- nvpmodel keeps the mode it last set in ``/var/lib/nvpmodel/status`` as ``pmode:<id>``
  (zero-padded, e.g. ``pmode:0002``; some releases add ``fmode:<fan mode>``). Without that
  file the board runs its boot default.
- Clocks: the GPU's devfreq ``sys/class/devfreq/<gpu>/cur_freq`` (Hz) and the CPU's
  ``sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq`` (kHz), where readable.

Every path is under the sysfs root (``power.sysfs_root``), so tests use fake trees. The
files are small regular files (no I2C); :class:`PowerModeReader` still reads them only
from the sampler thread, and at most every ``refresh_s``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edged.power.base import PowerModeState, read_sysfs_int, read_sysfs_str

CONF = "etc/nvpmodel.conf"
STATUS = "var/lib/nvpmodel/status"
CPU_FREQ = "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"
DEVFREQ_DIR = "sys/class/devfreq"

_MODEL = re.compile(r"^<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>", re.MULTILINE)
_DEFAULT = re.compile(r"^<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", re.MULTILINE)
_STATUS = re.compile(r"pmode:\s*(\d+)")


def parse_conf(text: str) -> tuple[dict[int, str], int | None]:
    """The modes an nvpmodel configuration defines (id -> name) and its boot default."""
    modes = {int(m.group(1)): m.group(2) for m in _MODEL.finditer(text)}
    default = _DEFAULT.search(text)
    return modes, int(default.group(1)) if default else None


def parse_status(text: str) -> int | None:
    """The mode id in nvpmodel's status file (``pmode:0002`` -> 2), None if absent."""
    m = _STATUS.search(text)
    return int(m.group(1)) if m else None


class PowerModeReader:
    """The current nvpmodel mode under ``root``, cached for ``refresh_s`` seconds.

    ``watts``: mode name -> power budget, W, from the board profile's ``[[power_modes]]``;
    ``gpu_devfreq``: the GPU's devfreq names to try (the profile's ``[accel]``).
    """

    def __init__(
        self,
        root: Path,
        *,
        watts: Mapping[str, float | None] | None = None,
        gpu_devfreq: Sequence[str] = (),
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root)
        self.watts = dict(watts or {})
        self.gpu_devfreq = tuple(gpu_devfreq)
        self.refresh_s = refresh_s
        self._clock = clock
        self._cached: PowerModeState | None = None
        self._read_at = 0.0

    @property
    def present(self) -> bool:
        """True when the board has an nvpmodel configuration."""
        return (self.root / CONF).is_file()

    def read(self) -> PowerModeState:
        """The mode now (from the cache when it is younger than ``refresh_s``)."""
        now = self._clock()
        if self._cached is None or now - self._read_at >= self.refresh_s:
            self._cached = self.read_now()
            self._read_at = now
        return self._cached

    def read_now(self) -> PowerModeState:
        """Read the configuration, the status file and the clocks."""
        clocks = self._clocks()
        try:
            modes, default = parse_conf((self.root / CONF).read_bytes().decode("utf-8", "replace"))
        except OSError as e:
            return PowerModeState(clocks_mhz=clocks, reason=f"no nvpmodel configuration ({e})")
        source = "status"
        try:
            mode_id = parse_status(read_sysfs_str(self.root / STATUS))
        except OSError:
            mode_id = None
        if mode_id is None:
            mode_id, source = default, "default"
        if mode_id is None:
            return PowerModeState(
                clocks_mhz=clocks, reason="nvpmodel status unreadable and no PM_CONFIG DEFAULT"
            )
        name = modes.get(mode_id)
        if name is None:
            return PowerModeState(
                id=mode_id,
                source=source,
                clocks_mhz=clocks,
                reason=f"mode {mode_id} is not defined in {CONF}",
            )
        return PowerModeState(
            id=mode_id,
            name=name,
            watts=self.watts.get(name),
            source=source,
            clocks_mhz=clocks,
        )

    def _clocks(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.gpu_devfreq:
            try:
                out["gpu"] = read_sysfs_int(self.root / DEVFREQ_DIR / name / "cur_freq") / 1e6
                break
            except (OSError, ValueError):
                continue
        with contextlib.suppress(OSError, ValueError):
            out["cpu0"] = read_sysfs_int(self.root / CPU_FREQ) / 1e3
        return {k: round(v, 1) for k, v in out.items()}


def reader_for(
    root: Path,
    modes: Sequence[tuple[str, float | None]],
    gpu_devfreq: Sequence[str],
) -> PowerModeReader | None:
    """A reader for a board whose profile lists power modes (``(name, watts)``), when its
    nvpmodel configuration exists under ``root``; None otherwise."""
    if not modes:
        return None
    reader = PowerModeReader(root, watts=dict(modes), gpu_devfreq=gpu_devfreq)
    return reader if reader.present else None
