"""Topic names: the one place that spells them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic of one device: ``<prefix>/<device_id>/...``."""

    prefix: str
    device_id: str

    @property
    def base(self) -> str:
        """``edged/<device_id>``."""
        return f"{self.prefix}/{self.device_id}"

    @property
    def request(self) -> str:
        """Where clients publish requests (QoS 1)."""
        return f"{self.base}/request"

    @property
    def cancel(self) -> str:
        """Where clients publish ``{"id": ...}`` to stop a request (barge-in)."""
        return f"{self.base}/cancel"

    @property
    def confirm(self) -> str:
        """Where an app answers a device tool's ``confirm`` message (docs/agents.md)."""
        return f"{self.base}/confirm"

    @property
    def status(self) -> str:
        """Retained online/offline status; ``offline`` is also the last will."""
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:
        """Periodic device telemetry."""
        return f"{self.base}/telemetry"

    @property
    def request_events(self) -> str:
        """One event per finished request (no prompt text)."""
        return f"{self.base}/events/request"

    @property
    def tool_events(self) -> str:
        """One event per guardian decision on a tool call (no argument values by default)."""
        return f"{self.base}/events/tool"

    def response(self, request_id: str) -> str:
        """Default reply topic when a request names none."""
        return f"{self.base}/response/{request_id}"
