"""Per-request energy windows.

The interface follows Zeus: ``begin(key)`` when a request is admitted, ``end(key)`` when its
result is ready; windows may overlap. Until a power source is configured the null meter
answers every window with unknown values and the reason, never with zeros.
"""

from __future__ import annotations

from typing import Protocol

from edged.types import EnergyReport


class Meter(Protocol):
    """What the pipeline needs from energy accounting."""

    def begin(self, key: str) -> None:
        """Open a measurement window named ``key``."""
        ...

    def end(self, key: str, completion_tokens: int) -> EnergyReport:
        """Close window ``key`` and report its energy (joules, unknown as None)."""
        ...


class NullMeter:
    """No power source: every report is unknown, with the reason."""

    reason = "no power source configured"

    def begin(self, key: str) -> None:
        """Nothing to open."""

    def end(self, key: str, completion_tokens: int) -> EnergyReport:
        """An all-unknown report."""
        return EnergyReport(
            joules=None,
            joules_active=None,
            tokens_per_joule=None,
            mwh_per_1k_tokens=None,
            source="none",
            estimated=False,
            sample_hz=None,
            reason=self.reason,
        )
