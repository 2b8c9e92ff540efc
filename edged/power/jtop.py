"""Power through jetson-stats' jtop service (source kind ``jtop``). UNTESTED IN CI.

Optional: ``pip install edged[jetson]`` installs jetson-stats, which is AGPL-3.0. It is
imported only when this source is constructed and never vendored; nothing here is copied
from it. The ``ina3221`` source reads the same sensors straight from sysfs and is the
default on Jetson boards; this one exists for setups that already run the jtop service.

Written against jetson-stats' public documentation (README, "jtop" library reference):
``jtop(interval=...)`` connects to the jtop service (``/run/jtop.sock``) with ``start()``
and disconnects with ``close()``; its ``power`` attribute is a dict with ``rail`` (rail
name -> dict with ``power`` in mW, ``volt`` in mV, ``curr`` in mA, ``online``) and ``tot``
(the board total, ``power`` in mW). Nothing here can be tested without the package and a
Jetson, so this stays deliberately small.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from edged.power.base import BuildContext, PowerSample, SensorInfo, register

INSTALL_HINT = "install edged[jetson] (jetson-stats, AGPL-3.0)"


@register("jtop", board_extras=False)
class JtopSource:
    """Board total and rails from a running jtop service. ``root`` is accepted, not used."""

    name: str = "jtop"
    estimated: bool = False
    max_rate_hz: float = 2.0

    @classmethod
    def from_config(cls, ctx: BuildContext) -> JtopSource:
        """jtop reads its own temperatures; the profile adds nothing."""
        return cls(root=ctx.root)

    def __init__(self, *, root: Path = Path("/"), interval_s: float = 0.5) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        try:
            module = importlib.import_module("jtop")
        except ImportError as e:
            raise ImportError(f"power source 'jtop' needs jetson-stats: {INSTALL_HINT}") from e
        self.root = Path(root)
        self.max_rate_hz = 1.0 / interval_s
        self._jetson: Any = module.jtop(interval=interval_s)
        try:
            self._jetson.start()
        except Exception as e:  # jtop raises its own JtopException when the service is down
            raise OSError(f"cannot connect to the jtop service: {e}") from e

    def _power(self) -> dict[str, Any]:
        if not self._jetson.is_alive():
            raise OSError("the jtop service connection is closed")
        power = self._jetson.power
        if not isinstance(power, dict):
            raise ValueError(f"jtop power is not a dict: {type(power).__name__}")
        return power

    def read(self) -> PowerSample:
        """The latest numbers jtop has (mW converted to W)."""
        t = time.monotonic()
        power = self._power()
        try:
            rails = {
                str(name): float(r["power"]) / 1e3
                for name, r in (power.get("rail") or {}).items()
                if isinstance(r, dict) and r.get("online", True) and r.get("power") is not None
            }
            tot = power.get("tot") or {}
            total = float(tot["power"]) / 1e3 if tot.get("power") is not None else None
        except (AttributeError, KeyError, TypeError) as e:
            raise ValueError(f"unexpected jtop power data: {type(e).__name__}: {e}") from e
        if total is None:
            return PowerSample(
                t_s=t, total_w=None, rails_w=rails, total_reason="jtop reports no total ('tot')"
            )
        return PowerSample(t_s=t, total_w=total, rails_w=rails)

    def sensors(self) -> list[SensorInfo]:
        """The rails jtop reports, or why it cannot be read."""
        try:
            s = self.read()
        except (OSError, ValueError) as e:
            return [SensorInfo("jtop", "/run/jtop.sock", problem=f"{type(e).__name__}: {e}")]
        out = [SensorInfo(n, "/run/jtop.sock", None, f"{w:.2f} W") for n, w in s.rails_w.items()]
        total = f"{s.total_w:.2f} W" if s.total_w is not None else None
        out.append(SensorInfo("tot", "/run/jtop.sock", "total", total, s.total_reason))
        return out

    def close(self) -> None:
        """Disconnect from the jtop service."""
        self._jetson.close()
