"""No power source (source kind ``null``): every total is unknown, with the reason."""

from __future__ import annotations

import time
from pathlib import Path

from edged.power.base import BuildContext, PowerSample, SensorInfo, register


@register("null", board_extras=False)
class NullSource:
    """Reports nothing: ``total_w`` is None with ``reason``; no sensors."""

    name: str = "null"
    estimated: bool = False
    max_rate_hz: float = 1.0

    @classmethod
    def from_config(cls, ctx: BuildContext) -> NullSource:
        """Nothing to read: every sample unknown."""
        return cls()

    def __init__(
        self, *, root: Path = Path("/"), reason: str = "no power source configured"
    ) -> None:
        self.root = Path(root)
        self.reason = reason

    def read(self) -> PowerSample:
        """An all-unknown sample."""
        return PowerSample(t_s=time.monotonic(), total_w=None, total_reason=self.reason)

    def sensors(self) -> list[SensorInfo]:
        """None."""
        return []

    def close(self) -> None:
        """Nothing to release."""
