"""Routing across named backends with trust classes: pure functions (docs/routing.md, "Tiers").

Every backend has a trust class: ``device`` (this board), ``lan`` (a server on the same
network) or ``public`` (a public cloud). A policy says where work may go and in what order
(``order``: trust classes or backend names), which classes a private request may use
(``private_on``, default ``["device"]``), and per remote tier which offload conditions may
send work there (``offload_on_tier``).

:func:`decide_tiers` works in two steps, so that every rule of :func:`~.policy.decide`
(deadline, queue, battery, thermal, power budget, energy, meaning, tools, budget) keeps its
meaning and its tests:

1. The *pool*: the backends the policy's order names, in that order, less those the request
   may not use (a private request: only ``private_on`` classes). The first device backend of
   the pool plays "local", the pool's remote backends together play "cloud", and
   :func:`~.policy.decide` says which side serves (its reasons: ``cloud_down`` and
   ``budget_spent`` then speak of the remote backends the request may use).
2. "local" is that device backend; "cloud" is the first remote backend of the pool that is
   healthy, has budget left, supports the request's tools, and whose tier allows the
   decision's offload conditions.

A hint names a backend (``local``, ``cloud`` or any name): it is obeyed when the backend is in
the pool; a private request naming a backend it may not use is decided as if it had named
none (``private`` first in the reasons); any other request naming a backend outside the
policy's order likewise, with ``hint``, ``not_allowed`` first. No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from edged.config import PolicyConfig
from edged.config_backends import TRUSTS, Trust
from edged.errors import BadRequest, Unavailable
from edged.router.policy import FAILED_PREFIX, RouteInputs, RouterState, decide
from edged.types import CLOUD, LOCAL, RouteDecision

#: The offload conditions (a tier's ``offload_on_tier`` filters on these).
CONDITIONS = frozenset(
    {"deadline", "queue_full", "battery_low", "thermal", "power_budget", "energy"}
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One backend as a decision sees it (cached values; no I/O)."""

    name: str
    trust: Trust
    ok: bool = True  # healthy: may be routed to now
    budget_left: bool = True  # its daily budget is not used up
    tools: bool = True  # honours tools and response formats
    queue: int = 0  # device backends: generations queued or running
    tokens_per_s: float | None = None
    ttft_s: float | None = None


def default_order(policy: PolicyConfig) -> list[str]:
    """The order a policy without ``order`` has: by its ``prefer``."""
    return ["device", "lan", "public"] if policy.prefer == LOCAL else ["public", "lan", "device"]


def ordered(policy: PolicyConfig, backends: Sequence[Candidate]) -> list[Candidate]:
    """The backends the policy may use, in its order (a class expands to its backends in
    configuration order; a backend named twice counts once, at its first place)."""
    out: list[Candidate] = []
    for entry in policy.order if policy.order is not None else default_order(policy):
        for b in backends:
            if (b.name == entry or (entry in TRUSTS and b.trust == entry)) and b not in out:
                out.append(b)
    return out


def pool(policy: PolicyConfig, backends: Sequence[Candidate], pinned: bool) -> list[Candidate]:
    """:func:`ordered`, less the classes a private request may not use."""
    allowed = set(policy.private_on) if pinned else set(TRUSTS)
    return [b for b in ordered(policy, backends) if b.trust in allowed]


def _target(hint: str, backends: Sequence[Candidate]) -> Candidate | None:
    for b in backends:
        if b.name == hint:
            return b
    if hint in (LOCAL, CLOUD):
        return None  # the built-in name without its backend: decide() says no_cloud
    names = sorted(b.name for b in backends)
    raise BadRequest(f"route: no backend {hint!r} on this device; known: auto, {names}")


def _tier_allows(b: Candidate, reasons: tuple[str, ...], policy: PolicyConfig) -> bool:
    conditions = CONDITIONS.intersection(reasons)
    if not conditions or b.trust == "device" or b.trust not in policy.offload_on_tier:
        return True
    return bool(conditions.intersection(policy.offload_on_tier[b.trust]))


def _usable(b: Candidate, needs_tools: bool) -> bool:
    return b.ok and b.budget_left and (b.tools or not needs_tools)


def decide_tiers(
    inp: RouteInputs,
    backends: Sequence[Candidate],
    policy: PolicyConfig,
    state: RouterState,
) -> tuple[RouteDecision, RouterState]:
    """Pick a backend by name for one request (see the module docstring). ``inp`` gives the
    request and device figures; its local_* and cloud_* fields are filled from ``backends``
    here. Raises BadRequest (unknown route), Unavailable, Timeout."""
    hint = inp.hint
    target = None if hint == "auto" else _target(hint, backends)
    usable_pool = pool(policy, backends, inp.pinned)
    prefix: tuple[str, ...] = ()
    if hint != "auto" and (target is not None and target not in usable_pool):
        prefix = ("private",) if inp.pinned else ("hint", "not_allowed")
        hint, target = "auto", None
    device = [b for b in usable_pool if b.trust == "device"]
    remotes = [b for b in usable_pool if b.trust != "device"]
    if target is not None:
        if target.trust == "device":
            device = [target]
        else:
            remotes = [target]
        hint = LOCAL if target.trust == "device" else CLOUD
    elif hint == CLOUD:
        remotes = []  # no backend named cloud: decide() says no_cloud
    d = device[0] if device else None
    live = [r for r in remotes if r.ok]
    legacy = replace(
        inp,
        hint=hint,
        pinned=inp.pinned and not remotes,
        local_ok=d is not None and d.ok,
        local_queue=d.queue if d else 0,
        local_tokens_per_s=d.tokens_per_s if d else None,
        local_ttft_s=d.ttft_s if d else None,
        local_tools=d is None or d.tools or not inp.needs_tools,
        cloud_configured=bool(remotes),
        cloud_ok=bool(live),
        cloud_budget_left=not live or any(r.budget_left for r in live),
        cloud_tools=not inp.needs_tools or any(r.tools for r in (live or remotes)),
    )
    first_remote = bool(usable_pool) and usable_pool[0].trust != "device"
    want = "cloud" if first_remote and hint == "auto" else "local"
    p = (
        policy
        if policy.prefer == want or hint != "auto"
        else policy.model_copy(update={"prefer": want})
    )
    decision, new_state = decide(legacy, p, state)
    reasons = decision.reasons
    if inp.pinned and remotes and not prefix and target is None:
        prefix = ("private",)
    if prefix == ("private",) and reasons[:1] == ("private",):
        prefix = ()
    if decision.backend == LOCAL:
        assert d is not None  # decide() serves locally only when local_ok
        if hint == "auto" and set(reasons) <= {"policy", "no_cloud", "charging"}:
            for name, (backend, hit) in sorted(inp.semantic.items()):
                if backend in (LOCAL, CLOUD):
                    continue  # decide() weighed these
                b = next((x for x in device if x.name == backend), None)
                if hit and b is not None and _usable(b, inp.needs_tools):
                    return RouteDecision(b.name, (*prefix, f"semantic:{name}")), new_state
        return RouteDecision(d.name, (*prefix, *reasons)), new_state
    for r in remotes:
        if _usable(r, inp.needs_tools) and _tier_allows(r, reasons, policy):
            return RouteDecision(r.name, (*prefix, *reasons)), new_state
    if d is not None and d.ok and not (inp.needs_tools and not d.tools):
        return RouteDecision(d.name, (*prefix, *reasons, "not_allowed")), new_state
    raise Unavailable("no backend this request may use can take it now")


def failed_reason(name: str) -> str:
    """The reason a fallback adds after backend ``name`` failed before its first token."""
    if name == CLOUD:
        return "cloud_failed"
    if name == LOCAL:
        return "local_failed"
    return f"{FAILED_PREFIX}{name}"


def fallback_tiers(
    route: RouteDecision,
    *,
    before_first_token: bool,
    pinned: bool,
    needs_tools: bool,
    backends: Sequence[Candidate],
    policy: PolicyConfig,
) -> RouteDecision | None:
    """After ``route``'s backend failed: the next backend of the policy's order the request
    may use (never a class it may not), with the failed backend's reason added; None when
    the failure stands (text was already sent, or no other backend may serve)."""
    if not before_first_token:
        return None
    for b in pool(policy, backends, pinned):
        if b.name != route.backend and _usable(b, needs_tools):
            return RouteDecision(b.name, (*route.reasons, failed_reason(route.backend)))
    return None
