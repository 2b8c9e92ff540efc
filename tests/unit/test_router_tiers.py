"""The tier policy (edged/router/tiers.py): named backends with trust classes, every rule a
unit test of the pure functions, and the presets from configs/policies/."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.config import PolicyConfig, RouterConfig
from edged.config_backends import BackendEntry
from edged.energy.meter import NullMeter
from edged.errors import BackendFailed, BadRequest, Timeout, Unavailable
from edged.guardian import PassGuardian
from edged.pipeline import Pipeline
from edged.router.policy import RouteInputs, RouterState, decide
from edged.router.router import Router, load_policies
from edged.router.tiers import Candidate, decide_tiers, fallback_tiers, ordered
from edged.telemetry.stats import backends_report
from edged.types import (
    BackendStats,
    ChatMessage,
    CloudUsage,
    Finished,
    ReplyAddress,
    Request,
    Result,
    RouteDecision,
    Sensitivity,
    Started,
    StreamEvent,
    TextDelta,
    Usage,
)
from tests.fuzzing import examples
from tests.unit.doubles import Script, Sink
from tests.unit.test_router import inputs, policies

ROOT = Path(__file__).resolve().parents[2]
PRESETS = load_policies(RouterConfig(policy_dir=ROOT / "configs" / "policies"))
TRADING = PRESETS["trading-ops"]
VOICE = PRESETS["voice-agent"]
CONTENT = PRESETS["content-pipeline"]

LOCAL = Candidate("local", "device", tokens_per_s=100.0, ttft_s=0.05)
EDGE = Candidate("edge", "lan")
CLOUD = Candidate("cloud", "public")
GEMMA = Candidate("gemma", "device", tokens_per_s=300.0, ttft_s=0.01)
ALL = (LOCAL, CLOUD, EDGE)
PRIVATE = RouteInputs(pinned=True)
NORMAL = RouteInputs()


def route(
    inp: RouteInputs, policy: PolicyConfig, backends: tuple[Candidate, ...] = ALL
) -> RouteDecision:
    return decide_tiers(inp, backends, policy, RouterState())[0]


def down(b: Candidate) -> Candidate:
    return replace(b, ok=False)


# --- the presets: the seed's three-tier table ---------------------------------------------


def test_presets_load_with_their_tiers() -> None:
    assert {"voice-agent", "content-pipeline", "battery-saver", "trading-ops"} <= set(PRESETS)
    assert TRADING.private_on == ["device", "lan"] and TRADING.order == ["lan", "device"]
    assert VOICE.private_on == ["device"]


def test_trading_private_goes_to_lan_never_public() -> None:
    assert route(PRIVATE, TRADING) == RouteDecision("edge", ("private", "policy"))
    # lan down: the device, never the public cloud
    d = route(PRIVATE, TRADING, (LOCAL, CLOUD, down(EDGE)))
    assert d == RouteDecision("local", ("private", "policy", "cloud_down"))
    # naming the public backend changes nothing
    assert route(replace(PRIVATE, hint="cloud"), TRADING).backend == "edge"


def test_trading_normal_work_never_goes_public_either() -> None:
    assert route(NORMAL, TRADING) == RouteDecision("edge", ("policy",))
    assert route(NORMAL, TRADING, (LOCAL, CLOUD, down(EDGE))).backend == "local"
    d = route(replace(NORMAL, hint="cloud"), TRADING)
    assert d == RouteDecision("edge", ("hint", "not_allowed", "policy"))


def test_trading_lan_and_device_down_is_unavailable_not_public() -> None:
    with pytest.raises(Unavailable):
        route(PRIVATE, TRADING, (down(LOCAL), CLOUD, down(EDGE)))


def test_voice_private_stays_on_the_device_even_naming_lan() -> None:
    assert route(replace(PRIVATE, hint="edge"), VOICE) == RouteDecision("local", ("private",))
    assert route(PRIVATE, VOICE) == RouteDecision("local", ("private",))
    with pytest.raises(Unavailable):
        route(PRIVATE, VOICE, (down(LOCAL), CLOUD, EDGE))


def test_voice_device_first_then_lan_on_deadline_or_queue_then_public() -> None:
    assert route(NORMAL, VOICE) == RouteDecision("local", ("policy",))
    late = replace(NORMAL, remaining_s=1.0)  # 0.05 + 256/100 = 2.61 s > 1 s
    assert route(late, VOICE) == RouteDecision("edge", ("deadline",))
    busy = replace(NORMAL, local_queue=5)  # the device backend's queue counts, not this
    assert route(busy, VOICE, (replace(LOCAL, queue=2), CLOUD, EDGE)) == RouteDecision(
        "edge", ("queue_full",)
    )
    assert route(late, VOICE, (LOCAL, CLOUD, down(EDGE))) == RouteDecision("cloud", ("deadline",))


def test_voice_hint_by_name_is_obeyed_for_normal_work() -> None:
    assert route(replace(NORMAL, hint="edge"), VOICE) == RouteDecision("edge", ("hint",))
    d = route(replace(NORMAL, hint="edge"), VOICE, (LOCAL, CLOUD, down(EDGE)))
    assert d == RouteDecision("local", ("hint", "cloud_down"))


def test_content_pipeline_public_first_then_lan_then_device() -> None:
    assert route(NORMAL, CONTENT) == RouteDecision("cloud", ("policy",))
    assert route(NORMAL, CONTENT, (LOCAL, down(CLOUD), EDGE)) == RouteDecision("edge", ("policy",))
    d = route(NORMAL, CONTENT, (LOCAL, down(CLOUD), down(EDGE)))
    assert d == RouteDecision("local", ("policy", "cloud_down"))
    assert route(PRIVATE, CONTENT) == RouteDecision("local", ("private",))


# --- the rules, one by one ------------------------------------------------------------------


def test_an_unknown_route_name_is_bad_request() -> None:
    with pytest.raises(BadRequest, match="no backend 'moon'"):
        route(replace(NORMAL, hint="moon"), VOICE)


def test_local_and_cloud_hints_without_those_backends_keep_their_meaning() -> None:
    d = route(replace(NORMAL, hint="cloud"), VOICE, (LOCAL, EDGE))
    assert d == RouteDecision("local", ("hint", "no_cloud"))


def test_order_names_classes_or_backends_and_leaves_out_the_rest() -> None:
    p = PolicyConfig(order=["edge", "device"])
    assert [b.name for b in ordered(p, (*ALL, GEMMA))] == ["edge", "local", "gemma"]
    assert [b.name for b in ordered(PolicyConfig(), ALL)] == ["local", "edge", "cloud"]
    assert [b.name for b in ordered(PolicyConfig(prefer="cloud"), ALL)] == [
        "cloud",
        "edge",
        "local",
    ]


def test_a_second_device_model_serves_when_named_or_first_in_order() -> None:
    assert route(replace(NORMAL, hint="gemma"), VOICE, (*ALL, GEMMA)) == RouteDecision(
        "gemma", ("hint",)
    )
    small_first = PolicyConfig(order=["gemma", "local", "lan"])
    assert route(NORMAL, small_first, (*ALL, GEMMA)) == RouteDecision("gemma", ("policy",))
    # its own measured speed is the deadline estimate: 0.01 + 256/300 = 0.86 s < 1 s
    late = replace(NORMAL, remaining_s=1.0)
    assert route(late, small_first, (*ALL, GEMMA)).backend == "gemma"


def test_offload_on_tier_filters_which_tier_a_condition_may_use() -> None:
    p = PolicyConfig(offload_on=["deadline", "queue_full"], offload_on_tier={"lan": ["queue_full"]})
    late = replace(NORMAL, remaining_s=1.0)
    assert route(late, p) == RouteDecision("cloud", ("deadline",))
    busy = (replace(LOCAL, queue=2), CLOUD, EDGE)
    assert route(NORMAL, p, busy) == RouteDecision("edge", ("queue_full",))
    only_lan = (LOCAL, EDGE)  # no tier allows deadline: the device, saying why
    assert route(late, p, only_lan) == RouteDecision("local", ("deadline", "not_allowed"))


def test_each_remote_has_its_own_budget() -> None:
    spent = replace(EDGE, budget_left=False)
    late = replace(NORMAL, remaining_s=1.0)
    assert route(late, VOICE, (LOCAL, CLOUD, spent)) == RouteDecision("cloud", ("deadline",))
    d = route(NORMAL, TRADING, (LOCAL, CLOUD, spent))
    assert d == RouteDecision("local", ("policy", "budget_spent"))


def test_tools_go_only_to_a_backend_that_supports_them() -> None:
    tools = replace(NORMAL, needs_tools=True)
    no_tools_edge = replace(EDGE, tools=False)
    late = replace(tools, remaining_s=1.0)
    assert route(late, VOICE, (LOCAL, CLOUD, no_tools_edge)) == RouteDecision(
        "cloud", ("deadline",)
    )


def test_private_on_lan_with_a_deadline_goes_to_lan() -> None:
    late = replace(PRIVATE, remaining_s=1.0)
    assert route(late, TRADING).backend == "edge"
    p = PolicyConfig(private_on=["device", "lan"])  # voice-like order, private may use lan
    assert route(late, p) == RouteDecision("edge", ("private", "deadline"))
    assert route(PRIVATE, p) == RouteDecision("local", ("private", "policy"))


# --- fallback before the first token --------------------------------------------------------


def fb(
    r: RouteDecision, policy: PolicyConfig, backends: tuple[Candidate, ...] = ALL, **kw: bool
) -> RouteDecision | None:
    args = {"before_first_token": True, "pinned": False, "needs_tools": False, **kw}
    return fallback_tiers(r, backends=backends, policy=policy, **args)


def test_fallback_goes_to_the_next_allowed_backend_in_order() -> None:
    lan = RouteDecision("edge", ("private", "policy"))
    assert fb(lan, TRADING, pinned=True) == RouteDecision(
        "local", ("private", "policy", "failed:edge")
    )
    # the device down too: nowhere; never the public cloud
    assert fb(lan, TRADING, (down(LOCAL), CLOUD, EDGE), pinned=True) is None
    voice = RouteDecision("edge", ("deadline",))
    assert fb(voice, VOICE) == RouteDecision("local", ("deadline", "failed:edge"))
    content = RouteDecision("cloud", ("policy",))
    assert fb(content, CONTENT) == RouteDecision("edge", ("policy", "cloud_failed"))


def test_fallback_keeps_the_built_in_reasons_and_rules() -> None:
    assert fb(RouteDecision("cloud", ("hint",)), VOICE) == RouteDecision(
        "local", ("hint", "cloud_failed")
    )
    assert fb(RouteDecision("local", ("policy",)), VOICE, (LOCAL, CLOUD)) == RouteDecision(
        "cloud", ("policy", "local_failed")
    )
    assert fb(RouteDecision("local", ("private",)), VOICE, pinned=True) is None
    assert fb(RouteDecision("cloud", ("hint",)), VOICE, before_first_token=False) is None


# --- extend, don't bend: with only local and cloud, the tiers decide as decide() ------------


def _as_candidates(inp: RouteInputs) -> tuple[Candidate, ...]:
    local = Candidate(
        "local",
        "device",
        ok=inp.local_ok,
        tools=inp.local_tools,
        queue=inp.local_queue,
        tokens_per_s=inp.local_tokens_per_s,
        ttft_s=inp.local_ttft_s,
    )
    if not inp.cloud_configured:
        return (local,)
    cloud = Candidate(
        "cloud", "public", ok=inp.cloud_ok, budget_left=inp.cloud_budget_left, tools=inp.cloud_tools
    )
    return (local, cloud)


@settings(max_examples=examples(default=600, thorough=3000), deadline=None)
@given(inputs, policies, st.booleans())
def test_two_backends_decide_exactly_as_before(
    inp: RouteInputs, policy: PolicyConfig, was_low: bool
) -> None:
    state = RouterState(battery_low=was_low)
    try:
        want: RouteDecision | type[Exception] = decide(inp, policy, state)[0]
    except (Unavailable, Timeout) as e:
        want = type(e)
    try:
        got: RouteDecision | type[Exception] = decide_tiers(
            inp, _as_candidates(inp), policy, state
        )[0]
    except (Unavailable, Timeout) as e:
        got = type(e)
    assert got == want


# --- docs/routing.md holds the presets' tiers -----------------------------------------------


def test_routing_md_three_tier_table_is_the_preset_files() -> None:
    text = (ROOT / "docs" / "routing.md").read_text()
    block = text[text.index("### The three-tier table, as presets") :]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^\| `([a-z-]+)` \| ([a-z, ]+) \| ([a-z, ]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2).split(", "), m.group(3).split(", "))
    assert set(rows) == {"voice-agent", "trading-ops", "content-pipeline"}
    for name, (order, private_on) in rows.items():
        assert PRESETS[name].order == order, name
        assert PRESETS[name].private_on == private_on, name


# --- the Router with named backends: budgets per backend, fallback through the pipeline -----


def _serve(
    edge: Script, policy: str, sensitivity: Sensitivity = "normal", n: int = 1
) -> tuple[Router, dict[str, Script], list[Sink]]:
    ok: list[StreamEvent | Exception] = [Started(), TextDelta("hi"), Finished("stop", Usage(3, 2))]
    backends = {"local": Script(list(ok)), "edge": edge, "cloud": Script(list(ok))}
    table = {
        "local": BackendEntry(name="local", kind="local", trust="device"),
        "cloud": BackendEntry(name="cloud", kind="cloud", trust="public"),
        "edge": BackendEntry(name="edge", kind="openai", trust="lan", daily_requests=1),
    }
    router = Router(RouterConfig(), PRESETS, backends, table=table)
    p = Pipeline(guardian=PassGuardian(), router=router, backends=backends, meter=NullMeter())
    sinks = []
    for i in range(n):
        sink = Sink()
        req = Request(
            id=f"r{i}",
            messages=(ChatMessage("user", "hello"),),
            max_tokens=8,
            temperature=0.0,
            stream=False,
            route="auto",
            sensitivity=sensitivity,
            reply=ReplyAddress("reply/x"),
            received_at_s=time.monotonic(),
            policy=policy,
        )
        asyncio.run(p.handle(req, sink))
        sinks.append(sink)
    return router, backends, sinks


def _route(sink: Sink) -> RouteDecision:
    (final,) = sink.finals
    assert isinstance(final, Result), final
    return final.route


def test_each_remote_backend_has_its_own_daily_budget_in_the_router() -> None:
    ok: list[StreamEvent | Exception] = [Started(), TextDelta("x"), Finished("stop", Usage(1, 5))]
    router, _, sinks = _serve(Script(ok), "trading-ops", n=2)
    assert _route(sinks[0]) == RouteDecision("edge", ("policy",))
    assert _route(sinks[1]) == RouteDecision("local", ("policy", "budget_spent"))
    assert router.usage_today("edge") == CloudUsage(1, 5)
    assert router.cloud_usage() == CloudUsage(0, 0)


def test_lan_failing_before_its_first_token_falls_to_the_device_never_public() -> None:
    failing = Script([BackendFailed("edge: refused", before_first_token=True)])
    _, backends, sinks = _serve(failing, "trading-ops", "private")
    assert _route(sinks[0]) == RouteDecision("local", ("private", "policy", "failed:edge"))
    assert not backends["cloud"].closed  # the public backend was never asked


def test_backends_report_names_each_backend_with_trust_and_usage() -> None:
    ok: list[StreamEvent | Exception] = [Started(), TextDelta("x"), Finished("stop", Usage(1, 5))]
    router, backends, _ = _serve(Script(ok), "trading-ops")
    backends["local"].resident = False  # type: ignore[misc]  # unloaded (on demand)
    report = backends_report(backends, router)
    assert list(report) == ["local", "edge", "cloud"]
    assert report["edge"]["trust"] == "lan" and report["edge"]["requests_today"] == 1
    assert report["edge"]["tokens_today"] == 5
    assert report["local"]["requests_today"] is None and report["local"]["healthy"] is True
    assert report["local"]["resident"] is False and report["edge"]["resident"] is None


def test_a_semantic_route_may_send_work_to_a_second_device_model() -> None:
    facts = {"facts": ("gemma", True)}
    backends = (*ALL, GEMMA)
    assert route(replace(NORMAL, semantic=facts), VOICE, backends) == RouteDecision(
        "gemma", ("semantic:facts",)
    )
    # not matched: the device's first model; urgent conditions beat meaning
    missed = {"facts": ("gemma", False)}
    assert route(replace(NORMAL, semantic=missed), VOICE, backends).backend == "local"
    late = replace(NORMAL, semantic=facts, remaining_s=1.0)
    assert route(late, VOICE, backends) == RouteDecision("edge", ("deadline",))
    # a private request may use it (it is on the device); a hint beats meaning
    assert route(replace(PRIVATE, semantic=facts), VOICE, backends).backend == "local"
    hinted = replace(NORMAL, semantic=facts, hint="local")
    assert route(hinted, VOICE, backends) == RouteDecision("local", ("hint",))


def test_a_second_device_model_is_a_candidate_with_its_own_figures() -> None:
    class Busy(Script):
        def stats(self) -> BackendStats:
            return BackendStats(queue_depth=3, tokens_per_s=12.5, ttft_s=0.4)

    backends = {"local": Script([]), "gemma": Busy([])}
    table = {
        "local": BackendEntry(name="local", kind="local", trust="device"),
        "gemma": BackendEntry(name="gemma", kind="llama", trust="device"),
    }
    router = Router(RouterConfig(), PRESETS, backends, table=table)
    gemma = {c.name: c for c in router.candidates(tools=False)}["gemma"]
    assert (gemma.queue, gemma.tokens_per_s, gemma.ttft_s) == (3, 12.5, 0.4)
