"""Telemetry's ``tools``: the tool calls the guardian decided, for client-executed and device
tools apart, and what became of the device calls edged ran (docs/telemetry.md#tools).

Counters since this process started, like the record's other counters. A decision is
counted when the guardian makes it (:meth:`ToolCounts.decided`, fed by the audit hook that
also publishes ``events/tool``), whatever the request's outcome; a device call's fate when
the agent loop has dealt with it (:meth:`ToolCounts.stepped`, one per entry of a result's
``steps``). Both run on the event loop and only add to dicts.
"""

from __future__ import annotations

from typing import Any

from edged.types import AgentStep, ToolDecision

#: Decisions, as ToolDecision.decision says them.
DECISIONS = ("allow", "block", "confirm")
#: What became of device calls (the agent loop's steps).
DEVICE_OUTCOMES = ("published", "timeouts", "not_confirmed", "refused")


class ToolCounts:
    """Cumulative tool-call counts: ``client`` and ``device`` calls decided, by decision;
    device calls published, timed out, not confirmed and refused; tool rule ids that acted."""

    def __init__(self) -> None:
        self.client: dict[str, int] = dict.fromkeys(("calls", *DECISIONS), 0)
        self.device: dict[str, int] = dict.fromkeys(("calls", *DECISIONS, *DEVICE_OUTCOMES), 0)
        self.rules: dict[str, int] = {}

    def decided(self, d: ToolDecision) -> None:
        """The guardian decided one call (allow, block or confirm)."""
        counts = self.device if d.device else self.client
        counts["calls"] += 1
        counts[d.decision] += 1
        for rid in d.rules:
            self.rules[rid] = self.rules.get(rid, 0) + 1

    def stepped(self, step: AgentStep) -> None:
        """The agent loop dealt with one device call (edged.types.AgentStep)."""
        if step.outcome != "not_run":  # published on its topic (a reply came, or none owed)
            self.device["published"] += 1
        if step.outcome == "timeout":
            self.device["timeouts"] += 1
        elif step.decision == "confirm" and step.outcome == "not_run":
            self.device["not_confirmed"] += 1  # denied, or no answer in time
        elif step.decision == "refused":
            self.device["refused"] += 1

    def snapshot(self) -> dict[str, Any]:
        """The record's ``tools`` object (copies)."""
        return {"client": dict(self.client), "device": dict(self.device), "rules": dict(self.rules)}
