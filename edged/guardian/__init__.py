"""The guardian: rules on every input and on the streamed output.

This module holds the interface and the pass-through guardian used when no rule pack is
configured. ``rules.py`` loads packs, ``normalize.py`` builds the views rules match on,
``pii.py`` holds the detectors, ``pii_scan.py`` runs them, ``matcher.py`` compiles rules,
``stream.py`` is the hold-back filter for streamed output, ``tool_rules.py`` decides tool
calls, and ``engine.py`` puts them together.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from edged.types import (
    GuardianReport,
    Request,
    StreamEvent,
    ToolAudit,
    ToolCall,
    ToolDecision,
    Verdict,
)


class Guardian(Protocol):
    """What the pipeline needs from the guardian."""

    async def check_input(self, request: Request) -> Verdict:
        """Judge a request's input; raises :class:`~edged.errors.Blocked` to refuse it."""
        ...

    def filter_stream(
        self, events: AsyncGenerator[StreamEvent, None], verdict: Verdict
    ) -> AsyncGenerator[StreamEvent, None]:
        """Wrap a backend's stream so nothing forbidden reaches the client."""
        ...

    def check_calls(
        self, request: Request, calls: Sequence[ToolCall], verdict: Verdict
    ) -> tuple[ToolCall, ...]:
        """Decide a turn's validated tool calls: the ones released (``confirm`` set under a
        confirm rule); blocked ones are left out and counted in ``verdict.tools``. Raises
        :class:`~edged.errors.Blocked` naming the rules when every call is blocked."""
        ...

    def report(self, verdict: Verdict) -> GuardianReport | None:
        """What the guardian did to this request, for the result; None when it has no rules."""
        ...

    def close(self) -> None:
        """Release its worker threads (after a reload replaced it)."""
        ...


class PassGuardian:
    """No rules: lets everything through, and says so by reporting None. ``audit`` is told
    each tool call, allowed by no rule (the audit trail and telemetry's tool counts)."""

    def __init__(self, audit: ToolAudit | None = None) -> None:
        self.audit = audit

    async def check_input(self, request: Request) -> Verdict:
        """Accept the request unchanged."""
        return Verdict(request=request)

    def filter_stream(
        self, events: AsyncGenerator[StreamEvent, None], verdict: Verdict
    ) -> AsyncGenerator[StreamEvent, None]:
        """Return the stream unchanged."""
        return events

    def check_calls(
        self, request: Request, calls: Sequence[ToolCall], verdict: Verdict
    ) -> tuple[ToolCall, ...]:
        """Release every call (each audited as allowed, no rule)."""
        if self.audit is not None:
            for c in calls:
                device = c.name in request.device_tools
                self.audit(
                    ToolDecision(request.id, c.id, c.name, "allow", (), 0.0, c.arguments, device)
                )
        return tuple(calls)

    def report(self, verdict: Verdict) -> GuardianReport | None:
        """None: no rules are loaded."""
        return None

    def close(self) -> None:
        """Nothing to release."""
