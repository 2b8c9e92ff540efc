"""The routing policy: one test per rule, and properties over random device states."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.config import PolicyConfig
from edged.errors import Timeout, Unavailable
from edged.router.policy import RouteInputs, RouterState, battery_low, decide, fallback
from edged.types import PowerState, RouteDecision
from tests.fuzzing import examples

VOICE = PolicyConfig(prefer="local", offload_on=["deadline", "queue_full"])
CONTENT = PolicyConfig(
    prefer="cloud",
    offload_on=["deadline", "queue_full", "battery_low", "thermal", "power_budget", "energy"],
)
SAVER = PolicyConfig(
    prefer="local",
    battery_low_pct=30,
    battery_hysteresis_pct=5,
    offload_on=["battery_low", "thermal", "power_budget", "energy", "deadline", "queue_full"],
)
BOTH = RouteInputs(
    cloud_configured=True, cloud_ok=True, local_tokens_per_s=100.0, local_ttft_s=0.05
)


def route(
    inp: RouteInputs, policy: PolicyConfig = VOICE, state: RouterState | None = None
) -> tuple[str, tuple[str, ...]]:
    d, _ = decide(inp, policy, state or RouterState())
    return d.backend, d.reasons


def test_private_never_leaves_even_when_asked_for_the_cloud() -> None:
    assert route(replace(BOTH, pinned=True, hint="cloud")) == ("local", ("private",))
    with pytest.raises(Unavailable, match="may not leave"):
        route(replace(BOTH, pinned=True, local_ok=False))


def test_hints() -> None:
    assert route(replace(BOTH, hint="local"), CONTENT) == ("local", ("hint",))
    assert route(replace(BOTH, hint="cloud")) == ("cloud", ("hint",))
    assert route(replace(BOTH, hint="cloud", cloud_ok=False)) == ("local", ("hint", "cloud_down"))
    assert route(replace(BOTH, hint="cloud", cloud_budget_left=False)) == (
        "local",
        ("hint", "budget_spent"),
    )


def test_device_without_a_cloud() -> None:
    assert route(RouteInputs()) == ("local", ("no_cloud",))
    with pytest.raises(Unavailable):
        route(RouteInputs(local_ok=False))


def test_voice_agent_stays_local_unless_it_cannot_finish_in_time() -> None:
    assert route(BOTH) == ("local", ("policy",))
    # 256 tokens at 100 tok/s is 2.6 s: a 1 s deadline cannot be met locally
    assert route(replace(BOTH, remaining_s=1.0)) == ("cloud", ("deadline",))
    assert route(replace(BOTH, remaining_s=5.0)) == ("local", ("policy",))
    assert route(replace(BOTH, local_queue=2)) == ("cloud", ("queue_full",))
    # battery and heat are not the voice agent's business
    hot = replace(BOTH, power=PowerState(battery_pct=5, charging=False, thermal_throttled=True))
    assert route(hot) == ("local", ("policy",))


def test_deadline_without_cloud_is_served_locally_or_refused() -> None:
    nocloud = replace(BOTH, cloud_ok=False)
    assert route(replace(nocloud, remaining_s=2.0)) == ("local", ("deadline", "cloud_down"))
    with pytest.raises(Timeout):  # 2.6 s of work against 0.1 s left
        route(replace(nocloud, remaining_s=0.1))


def test_local_down_offloads_unless_private() -> None:
    assert route(replace(BOTH, local_ok=False)) == ("cloud", ("local_down", "policy"))


def test_content_pipeline_prefers_the_cloud() -> None:
    assert route(BOTH, CONTENT) == ("cloud", ("policy",))
    assert route(replace(BOTH, cloud_ok=False), CONTENT) == ("local", ("policy", "cloud_down"))
    assert route(replace(BOTH, cloud_budget_left=False), CONTENT) == (
        "local",
        ("policy", "budget_spent"),
    )


def test_fallback_goes_to_the_other_backend_only_before_the_first_token() -> None:
    cloud, local = RouteDecision("cloud", ("policy",)), RouteDecision("local", ("deadline",))
    ok = {"pinned": False, "local_ok": True, "cloud_ok": True}
    assert fallback(cloud, before_first_token=True, **ok) == RouteDecision(
        "local", ("policy", "cloud_failed")
    )
    assert fallback(local, before_first_token=True, **ok) == RouteDecision(
        "cloud", ("deadline", "local_failed")
    )
    # text was sent: serving elsewhere would repeat it
    assert fallback(cloud, before_first_token=False, **ok) is None
    assert fallback(local, before_first_token=False, **ok) is None
    # the other backend is down or absent
    assert (
        fallback(cloud, before_first_token=True, pinned=False, local_ok=False, cloud_ok=True)
        is None
    )
    assert (
        fallback(local, before_first_token=True, pinned=False, local_ok=True, cloud_ok=False)
        is None
    )
    # a private request never goes to the cloud
    assert (
        fallback(local, before_first_token=True, pinned=True, local_ok=True, cloud_ok=True) is None
    )


def test_a_request_with_tools_goes_only_where_tools_are_supported() -> None:
    tools = replace(BOTH, needs_tools=True)
    # both support them: the usual decision
    assert route(tools) == ("local", ("policy",))
    # only the cloud does
    assert route(replace(tools, local_tools=False)) == ("cloud", ("tools",))
    with pytest.raises(Unavailable, match="may not leave"):
        route(replace(tools, local_tools=False, pinned=True))
    with pytest.raises(Unavailable, match="cloud_down"):
        route(replace(tools, local_tools=False, cloud_ok=False))
    with pytest.raises(Unavailable, match="no backend here supports them"):
        route(replace(tools, local_tools=False, cloud_tools=False))
    # only the local model does: a policy that prefers the cloud says why it did not go there
    assert route(replace(tools, cloud_tools=False), CONTENT) == ("local", ("policy", "tools"))
    assert route(replace(tools, cloud_tools=False, hint="cloud")) == ("local", ("hint", "tools"))
    # a request without tools is not affected by what the backends support
    assert route(replace(BOTH, local_tools=False, cloud_tools=False)) == ("local", ("policy",))


def test_battery_saver() -> None:
    low = replace(BOTH, power=PowerState(battery_pct=25, charging=False))
    assert route(low, SAVER) == ("cloud", ("battery_low",))
    charging = replace(BOTH, power=PowerState(battery_pct=25, charging=True))
    assert route(charging, SAVER) == ("local", ("charging",))
    full = replace(BOTH, power=PowerState(battery_pct=80, charging=False))
    assert route(full, SAVER) == ("local", ("policy",))
    unknown = replace(BOTH, power=PowerState())  # no battery: never "low"
    assert route(unknown, SAVER) == ("local", ("policy",))


def test_thermal_power_budget_and_energy() -> None:
    hot = replace(BOTH, power=PowerState(thermal_throttled=True))
    assert route(hot, SAVER) == ("cloud", ("thermal",))
    budget = SAVER.model_copy(update={"power_budget_w": 10.0})
    assert route(replace(BOTH, power=PowerState(power_w=12.5)), budget) == (
        "cloud",
        ("power_budget",),
    )
    assert route(replace(BOTH, power=PowerState(power_w=8.0)), budget) == ("local", ("policy",))
    costly = replace(BOTH, local_j_per_token=0.05, radio_j_per_request=5.0)  # 12.8 J vs 5 J
    assert route(costly, SAVER) == ("cloud", ("energy",))
    cheap = replace(costly, max_tokens=50)  # 2.5 J vs 5 J
    assert route(cheap, SAVER) == ("local", ("policy",))


def test_semantic_routes() -> None:
    facts = replace(BOTH, semantic={"fresh-facts": ("cloud", True), "smalltalk": ("local", False)})
    assert route(facts) == ("cloud", ("semantic:fresh-facts",))
    chat = replace(BOTH, semantic={"fresh-facts": ("cloud", False), "smalltalk": ("local", True)})
    assert route(chat, CONTENT) == ("local", ("semantic:smalltalk",))
    # urgency beats meaning
    assert route(replace(chat, remaining_s=0.5)) == ("cloud", ("deadline",))


def test_battery_hysteresis() -> None:
    def at(pct: float, was: bool) -> bool:
        return battery_low(PowerState(battery_pct=pct), SAVER, was)

    assert at(30, False) and at(34, True) and at(35, True)
    assert not at(31, False) and not at(35.1, True)
    # a battery hovering around the threshold does not flap the route
    state = RouterState()
    seen = []
    for pct in [31, 30, 31, 32, 33, 34, 33, 35, 36, 35, 31]:
        d, state = decide(
            replace(BOTH, power=PowerState(battery_pct=pct, charging=False)), SAVER, state
        )
        seen.append(d.backend)
    assert seen == ["local"] + ["cloud"] * 7 + ["local"] * 3


# --- properties ----------------------------------------------------------------------------

powers = st.builds(
    PowerState,
    battery_pct=st.one_of(st.none(), st.floats(0, 100)),
    charging=st.one_of(st.none(), st.booleans()),
    power_w=st.one_of(st.none(), st.floats(0, 60)),
    thermal_throttled=st.one_of(st.none(), st.booleans()),
)
inputs = st.builds(
    RouteInputs,
    hint=st.sampled_from(["auto", "local", "cloud"]),
    pinned=st.booleans(),
    max_tokens=st.integers(1, 2048),
    remaining_s=st.one_of(st.none(), st.floats(0.001, 600)),
    power=powers,
    local_ok=st.booleans(),
    local_queue=st.integers(0, 20),
    local_tokens_per_s=st.one_of(st.none(), st.floats(1, 500)),
    local_ttft_s=st.one_of(st.none(), st.floats(0, 2)),
    cloud_configured=st.booleans(),
    cloud_ok=st.booleans(),
    cloud_budget_left=st.booleans(),
    local_j_per_token=st.one_of(st.none(), st.floats(0.001, 1)),
    radio_j_per_request=st.one_of(st.none(), st.floats(0.1, 50)),
    semantic=st.dictionaries(
        st.sampled_from(["a", "b"]), st.tuples(st.sampled_from(["local", "cloud"]), st.booleans())
    ),
    needs_tools=st.booleans(),
    local_tools=st.booleans(),
    cloud_tools=st.booleans(),
)
policies = st.sampled_from([VOICE, CONTENT, SAVER])


# 10 ms an example (the policies' rule tables); the thorough profile runs 3,000
@settings(max_examples=examples(default=600, thorough=3000), deadline=None)
@given(inputs, policies, st.booleans())
def test_properties(inp: RouteInputs, policy: PolicyConfig, was_low: bool) -> None:
    try:
        d, _ = decide(inp, policy, RouterState(battery_low=was_low))
    except (Unavailable, Timeout):
        return
    assert d.reasons, "a decision always has at least one reason"
    if inp.pinned:
        assert d.backend == "local" and "private" in d.reasons
    if d.backend == "cloud":
        assert inp.cloud_configured and inp.cloud_ok and inp.cloud_budget_left
    else:
        assert inp.local_ok
    if inp.needs_tools:
        assert inp.cloud_tools if d.backend == "cloud" else inp.local_tools
    assert all(isinstance(r, str) and r for r in d.reasons)


@settings(max_examples=examples(default=300, thorough=1000), deadline=None)
@given(st.lists(st.floats(0, 100), min_size=2, max_size=40))
def test_hysteresis_property(levels: list[float]) -> None:
    """The low state only changes on crossing the threshold (down) or threshold +
    hysteresis (up): between the two, it keeps whatever it was."""
    was = False
    for pct in levels:
        now = battery_low(PowerState(battery_pct=pct), SAVER, was)
        lo, hi = SAVER.battery_low_pct, SAVER.battery_low_pct + SAVER.battery_hysteresis_pct
        if lo < pct <= hi:
            assert now == was
        elif pct <= lo:
            assert now
        else:
            assert not now
        was = now
