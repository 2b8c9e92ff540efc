"""The guardian: rules on every input and on the streamed output.

This module holds the interface and the pass-through guardian used when no rule pack is
configured. ``rules.py`` loads packs, ``normalize.py`` builds the views rules match on,
``pii.py`` holds the detectors, ``pii_scan.py`` runs them, ``matcher.py`` compiles rules,
``stream.py`` is the hold-back filter for streamed output, and ``engine.py`` puts them
together.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from edged.types import GuardianReport, Request, StreamEvent, Verdict


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

    def report(self, verdict: Verdict) -> GuardianReport | None:
        """What the guardian did to this request, for the result; None when it has no rules."""
        ...

    def close(self) -> None:
        """Release its worker threads (after a reload replaced it)."""
        ...


class PassGuardian:
    """No rules: lets everything through, and says so by reporting None."""

    async def check_input(self, request: Request) -> Verdict:
        """Accept the request unchanged."""
        return Verdict(request=request)

    def filter_stream(
        self, events: AsyncGenerator[StreamEvent, None], verdict: Verdict
    ) -> AsyncGenerator[StreamEvent, None]:
        """Return the stream unchanged."""
        return events

    def report(self, verdict: Verdict) -> GuardianReport | None:
        """None: no rules are loaded."""
        return None

    def close(self) -> None:
        """Nothing to release."""
