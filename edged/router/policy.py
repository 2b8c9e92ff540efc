"""Routing policy: pure functions from what the device knows to a decision, with reasons.

No I/O and no clock here: everything a decision depends on is in :class:`RouteInputs`, and
the only memory (battery hysteresis) goes in and out as :class:`RouterState`. Every rule is
therefore a unit test, and docs/routing.md has a worked example per rule.

Reason codes (stable; they reach results and telemetry):

``private``        sensitivity private, or a guardian force_local rule: never leaves the device
``hint``           the request asked for local or cloud
``policy``         the policy's preference decided (nothing else did)
``deadline``       the local model cannot finish within the deadline
``queue_full``     the local model has too much queued
``battery_low``    battery at or below the policy's threshold (with hysteresis) and not charging
``charging``       battery low but charging: no reason to offload
``thermal``        the board is throttling
``power_budget``   the board draws more than the policy's power budget
``energy``         serving locally would cost more energy than the radio
``semantic:<name>`` the prompt resembles a configured route's examples
``cloud_down``     the cloud is unreachable, its breaker is open, or it asked us to wait
``budget_spent``   the daily cloud budget is used up
``no_cloud``       no cloud backend is configured
``local_down``     the local model is not available
``tools``          the request carries tools or a response format, and only this backend
                   supports them

Added while serving, by the pipeline (``edged/pipeline.py``), when the chosen backend fails
before its first token and the other one answers instead:

``cloud_failed``   the cloud failed before its first token; the local model answered
``local_failed``   the local model failed before its first token; the cloud answered
``failed:<name>``  the named backend failed before its first token; the next backend of the
                   policy's order answered (edged/router/tiers.py)

Added by the tier step (edged/router/tiers.py):

``not_allowed``    the request named a backend its policy may not use, or no remote
                   backend's tier allows the offload condition

:data:`REASONS` lists them all; ``tests/unit/test_reason_codes.py`` holds this docstring,
docs/protocol.md, docs/routing.md and docs/schemas/result.schema.json to that list, and the
code to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edged.config import PolicyConfig
from edged.errors import Timeout, Unavailable
from edged.types import CLOUD, LOCAL, PowerState, RouteDecision

#: The reason codes :func:`decide` gives, in the order of the list above.
DECISION_REASONS = (
    "private",
    "hint",
    "policy",
    "deadline",
    "queue_full",
    "battery_low",
    "charging",
    "thermal",
    "power_budget",
    "energy",
    "cloud_down",
    "budget_spent",
    "no_cloud",
    "local_down",
    "tools",
)
#: Prefix of the semantic reasons: ``semantic:<route name>``.
SEMANTIC_PREFIX = "semantic:"
#: The reason codes :func:`fallback` adds when a request goes to the other backend.
FALLBACK_REASONS = ("cloud_failed", "local_failed")
#: The reason codes the tier step (edged/router/tiers.py) adds.
TIER_REASONS = ("not_allowed",)
#: Prefix of the fallback reason after a named backend failed: ``failed:<name>``.
FAILED_PREFIX = "failed:"
#: Every fixed reason code a route can carry (besides ``semantic:<name>``, ``failed:<name>``).
REASONS = DECISION_REASONS + FALLBACK_REASONS + TIER_REASONS


@dataclass(frozen=True, slots=True)
class RouteInputs:
    """Everything one decision looks at (a snapshot; times are seconds from now)."""

    hint: str = "auto"  # auto | local | cloud
    pinned: bool = False  # private, or a guardian force_local
    max_tokens: int = 256
    remaining_s: float | None = None  # time left before the deadline; None: no deadline
    power: PowerState = field(default_factory=PowerState)
    local_ok: bool = True
    local_queue: int = 0  # generations queued or running locally
    local_tokens_per_s: float | None = None  # measured decode rate
    local_ttft_s: float | None = None  # measured time to first token (prompt evaluation)
    cloud_configured: bool = False
    cloud_ok: bool = False  # reachable and its breaker lets requests through
    cloud_budget_left: bool = True
    local_j_per_token: float | None = None
    radio_j_per_request: float | None = None
    semantic: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    # semantic: route name -> (backend it prefers, whether the prompt matched it)
    needs_tools: bool = False  # the request carries tools or a response_format
    local_tools: bool = True  # the local backend supports them
    cloud_tools: bool = True  # the cloud backend supports them


@dataclass(frozen=True, slots=True)
class RouterState:
    """What the policy remembers between decisions (battery hysteresis)."""

    battery_low: bool = False


def battery_low(power: PowerState, policy: PolicyConfig, was_low: bool) -> bool:
    """Low at or below the threshold; low again only above threshold + hysteresis."""
    pct = power.battery_pct
    if pct is None:
        return False
    if was_low:
        return pct <= policy.battery_low_pct + policy.battery_hysteresis_pct
    return pct <= policy.battery_low_pct


def local_finish_s(inp: RouteInputs) -> float | None:
    """Estimated seconds until the local model would finish this request, or None if
    the decode rate is not measured yet."""
    if not inp.local_tokens_per_s:
        return None
    per_request = (inp.local_ttft_s or 0.0) + inp.max_tokens / inp.local_tokens_per_s
    return per_request * (1 + inp.local_queue)


def fallback(
    route: RouteDecision,
    *,
    before_first_token: bool,
    pinned: bool,
    local_ok: bool,
    cloud_ok: bool,
) -> RouteDecision | None:
    """Where a request goes after ``route``'s backend failed: the other backend, with the
    reason ``cloud_failed`` / ``local_failed`` added, when it may serve; None when the
    failure stands (text was already sent, so serving elsewhere would repeat it; the other
    backend is down or absent; a private request never goes to the cloud)."""
    if not before_first_token:
        return None
    if route.backend != LOCAL:
        return RouteDecision(LOCAL, (*route.reasons, "cloud_failed")) if local_ok else None
    if pinned or not cloud_ok:
        return None
    return RouteDecision(CLOUD, (*route.reasons, "local_failed"))


def _tools_cloud_only(
    inp: RouteInputs, new_state: RouterState
) -> tuple[RouteDecision, RouterState]:
    """A request with tools when the local backend cannot take tools: the cloud, or nowhere."""
    if not inp.cloud_configured or not inp.cloud_tools:
        raise Unavailable("the request carries tools, and no backend here supports them")
    if inp.pinned:
        raise Unavailable(
            "the request carries tools, the local backend does not support them, and this "
            "request may not leave the device"
        )
    if not (inp.cloud_ok and inp.cloud_budget_left):
        why = "cloud_down" if not inp.cloud_ok else "budget_spent"
        raise Unavailable(f"the request carries tools, and only the cloud supports them ({why})")
    return RouteDecision(CLOUD, ("tools",)), new_state


def decide(
    inp: RouteInputs, policy: PolicyConfig, state: RouterState
) -> tuple[RouteDecision, RouterState]:
    """Pick local or cloud for one request; raises Unavailable / Timeout when neither can.

    The decision always carries at least one reason.
    """
    low = battery_low(inp.power, policy, state.battery_low)
    new_state = RouterState(battery_low=low)
    if inp.needs_tools and not inp.local_tools:
        return _tools_cloud_only(inp, new_state)
    cloud_tools_ok = inp.cloud_tools or not inp.needs_tools
    cloud_usable = (
        inp.cloud_configured and inp.cloud_ok and inp.cloud_budget_left and cloud_tools_ok
    )

    def why_not_cloud() -> str:
        if not inp.cloud_configured:
            return "no_cloud"
        if not cloud_tools_ok:
            return "tools"
        if not inp.cloud_ok:
            return "cloud_down"
        return "budget_spent"

    def local(*reasons: str) -> tuple[RouteDecision, RouterState]:
        if not inp.local_ok:
            if inp.pinned:
                raise Unavailable(
                    "the local model is not available, and this request may not leave the device"
                )
            if cloud_usable:
                return RouteDecision(CLOUD, ("local_down", *reasons)), new_state
            raise Unavailable(
                f"the local model is not available and the cloud cannot take "
                f"the request ({why_not_cloud()})"
            )
        return RouteDecision(LOCAL, reasons or ("policy",)), new_state

    # 1. Hard constraints: private never leaves; an explicit hint is obeyed when it can be.
    if inp.pinned:
        return local("private")
    if inp.hint == LOCAL:
        return local("hint")
    if inp.hint == CLOUD:
        if cloud_usable:
            return RouteDecision(CLOUD, ("hint",)), new_state
        return local("hint", why_not_cloud())

    if not inp.cloud_configured:
        return local("no_cloud")

    # 2. What argues for offloading, in order of urgency.
    offload: list[str] = []
    finish = local_finish_s(inp)
    on = set(policy.offload_on)
    if (
        "deadline" in on
        and inp.remaining_s is not None
        and finish is not None
        and finish > inp.remaining_s
    ):
        offload.append("deadline")
    if "queue_full" in on and inp.local_queue >= policy.queue_full_depth:
        offload.append("queue_full")
    if "battery_low" in on and low and inp.power.charging is not True:
        offload.append("battery_low")
    if "thermal" in on and inp.power.thermal_throttled:
        offload.append("thermal")
    if (
        "power_budget" in on
        and policy.power_budget_w is not None
        and inp.power.power_w is not None
        and inp.power.power_w > policy.power_budget_w
    ):
        offload.append("power_budget")
    if (
        "energy" in on
        and inp.local_j_per_token is not None
        and inp.radio_j_per_request is not None
        and inp.local_j_per_token * inp.max_tokens > inp.radio_j_per_request
    ):
        offload.append("energy")
    semantic_cloud = [
        f"{SEMANTIC_PREFIX}{n}"
        for n, (b, hit) in sorted(inp.semantic.items())
        if hit and b == CLOUD
    ]
    semantic_local = [
        f"{SEMANTIC_PREFIX}{n}"
        for n, (b, hit) in sorted(inp.semantic.items())
        if hit and b == LOCAL
    ]
    keep: list[str] = []
    if low and inp.power.charging is True and "battery_low" in on:
        keep.append("charging")

    # 3. Decide. Urgent reasons (the device cannot do it well) beat meaning and preference.
    urgent = [r for r in offload if r in ("deadline", "queue_full")]
    if urgent:
        if cloud_usable:
            return RouteDecision(CLOUD, tuple(urgent)), new_state
        if (
            "deadline" in urgent
            and inp.remaining_s is not None
            and finish is not None
            and finish > inp.remaining_s * 4
        ):
            raise Timeout(
                "neither the device nor the cloud can answer within the deadline "
                f"({why_not_cloud()})"
            )
        return local(*urgent, why_not_cloud())
    if offload or semantic_cloud:
        wanted = tuple(offload + semantic_cloud)
        if semantic_local and not offload:
            return local(*semantic_local)
        if cloud_usable:
            return RouteDecision(CLOUD, wanted), new_state
        return local(*wanted, why_not_cloud())
    if semantic_local:
        return local(*semantic_local, *keep)
    if policy.prefer_by_mode.get(inp.power.power_mode or "", policy.prefer) == CLOUD:
        if cloud_usable:
            return RouteDecision(CLOUD, ("policy",)), new_state
        return local("policy", why_not_cloud())
    return local(*keep) if keep else local("policy")
