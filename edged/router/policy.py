"""Routing policy: pure functions from (request, verdict, backend health) to a decision.

No I/O here: everything the decision depends on is an argument, so every rule is a unit
test. Reason codes are stable (docs/protocol.md lists them).
"""

from __future__ import annotations

from collections.abc import Mapping

from edged.errors import Unavailable
from edged.types import Request, RouteDecision, Verdict

LOCAL = "local"
CLOUD = "cloud"


def decide(request: Request, verdict: Verdict, healthy: Mapping[str, bool]) -> RouteDecision:
    """Pick the backend for ``request``.

    ``healthy`` maps backend names to whether they can serve now. Raises Unavailable when no
    backend may serve the request.
    """
    pinned = request.sensitivity == "private" or verdict.force_local
    if request.route == CLOUD and not pinned:
        if healthy.get(CLOUD):
            return RouteDecision(CLOUD, ("hint",))
        raise Unavailable("route 'cloud' was asked for, but no cloud backend is available")
    if not healthy.get(LOCAL):
        raise Unavailable("the local model is not available")
    if pinned:
        return RouteDecision(LOCAL, ("private",))
    if request.route == LOCAL:
        return RouteDecision(LOCAL, ("hint",))
    return RouteDecision(LOCAL, ("only_local",))


class Router:
    """Holds what the policy needs between requests (for now, nothing but the function)."""

    def decide(
        self, request: Request, verdict: Verdict, healthy: Mapping[str, bool]
    ) -> RouteDecision:
        """See :func:`decide`."""
        return decide(request, verdict, healthy)
