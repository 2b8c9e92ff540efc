"""The agent loop through the pipeline (issue 15 B), with scripted backends (one script per
model turn) and a recording executor in place of MQTT (tests/integration/test_agent_mqtt.py
runs the real broker): a device call is decided, published on its filled topic, its reply
becomes a tool turn and the model is asked again; a blocked, refused or unconfirmed call is
never executed; a timeout is a tool result; a tool result with personal data keeps the later
turns on the device; client calls still end a turn; the step limit holds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edged.agent.loop import Agent
from edged.config import Config, PolicyConfig, RouterConfig
from edged.energy.meter import NullMeter
from edged.errors import EdgedError
from edged.guardian import Guardian, PassGuardian
from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import load_packs
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.types import (
    ChatMessage,
    Finished,
    ReplyAddress,
    Request,
    Result,
    RouteHint,
    Started,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    ToolChoice,
    ToolSpec,
    Usage,
)
from tests.unit.doubles import Sink

ROOT = Path(__file__).resolve().parents[2]
CFG = Config.model_validate(
    {
        "agent": {"tool_topic_prefixes": ["home/"], "max_steps": 3},
        "tools": {
            "light_set": {
                "description": "Switch a room's light on or off.",
                "parameters": {
                    "type": "object",
                    "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
                    "required": ["room", "on"],
                },
                "topic": "home/{room}/light/set",
                "reply_topic": "home/{room}/light/state",
                "timeout_s": 0.5,
            },
            "unlock_door": {"topic": "home/door/unlock"},
            "notes": {"topic": "home/notes/get", "reply_topic": "home/notes/value"},
        },
    }
)
SPECS = {n: ToolSpec(n, t.description, t.parameters) for n, t in CFG.tools.items()}
ALARM = ToolSpec("set_alarm", "", {"type": "object", "properties": {}})


class Turns:
    """A backend that plays one script per generate call and records each request."""

    supports_tools = True

    def __init__(self, name: str, *scripts: list[StreamEvent]) -> None:
        self.name = name
        self.scripts = list(scripts)
        self.requests: list[Request] = []

    def healthy(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        self.requests.append(request)
        for ev in self.scripts.pop(0):
            await asyncio.sleep(0)
            yield ev


class Recorder:
    """A ToolExecutor that records calls and answers from a table (None: no reply)."""

    def __init__(self, replies: dict[str, str | None] | None = None) -> None:
        self.replies = replies or {}
        self.calls: list[tuple[str, str, str | None, float]] = []

    async def call(
        self, topic: str, payload_json: str, reply_topic: str | None, timeout_s: float
    ) -> str | None:
        self.calls.append((topic, payload_json, reply_topic, timeout_s))
        if reply_topic is None:
            return ""
        return self.replies.get(reply_topic, '{"state": "on"}')


def calls(*cs: ToolCall, text: str = "") -> list[StreamEvent]:
    head: list[StreamEvent] = [Started()] + ([TextDelta(text)] if text else [])
    return [*head, ToolCalls(cs), Finished("tool_calls", Usage(10, 5))]


def answer(text: str) -> list[StreamEvent]:
    return [Started(), TextDelta(text), Finished("stop", Usage(20, 3))]


def light(room: str = "kitchen", cid: str = "call_1") -> ToolCall:
    return ToolCall(cid, "light_set", json.dumps({"room": room, "on": True}))


def request(*device: str, route: RouteHint = "auto", client: tuple[ToolSpec, ...] = ()) -> Request:
    return Request(
        id="a1",
        messages=(ChatMessage("user", "switch the kitchen light on"),),
        max_tokens=64,
        temperature=0.0,
        stream=True,
        route=route,
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
        tools=(*client, *(SPECS[n] for n in device)),
        tool_choice=ToolChoice("auto"),
        device_tools=device,
    )


def serve(
    req: Request,
    local: Turns,
    executor: Recorder,
    guardian: Guardian | None = None,
    cloud: Turns | None = None,
) -> Result | EdgedError:
    backends: dict[str, Any] = {"local": local}
    if cloud is not None:
        backends["cloud"] = cloud
    router = Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends)
    p = Pipeline(
        guardian=guardian or PassGuardian(),
        router=router,
        backends=backends,
        meter=NullMeter(),
        agent=Agent(CFG.tools, executor, CFG.agent.max_steps),
    )
    sink = Sink()
    asyncio.run(p.handle(req, sink))
    assert len(sink.finals) == 1, "exactly one final reply"
    return sink.finals[0]


def rules_guardian(tmp_path: Path, text: str) -> RuleGuardian:
    p = tmp_path / "home.toml"
    p.write_text(text)
    return RuleGuardian(load_packs([p]))


def test_a_device_call_is_published_and_its_reply_reaches_the_model() -> None:
    local = Turns("local", calls(light(), text="On it. "), answer("The light is on."))
    ex = Recorder({"home/kitchen/light/state": '{"state": "on"}'})
    res = serve(request("light_set"), local, ex)
    assert isinstance(res, Result), res
    assert ex.calls == [
        ("home/kitchen/light/set", light().arguments, "home/kitchen/light/state", 0.5)
    ]
    second = local.requests[1].messages
    assert second[-2] == ChatMessage("assistant", "On it. ", (light(),))
    assert second[-1] == ChatMessage("tool", '{"state": "on"}', tool_call_id="call_1")
    assert res.text == "On it. The light is on."  # every turn's text, as it was streamed
    assert res.finish_reason == "stop" and res.tool_calls == ()
    [step] = res.steps
    assert (step.tool, step.decision, step.outcome) == ("light_set", "allow", "ok")
    assert step.latency_ms is not None and step.latency_ms >= 0
    assert res.usage.completion_tokens == 8 and res.usage.prompt_tokens == 30


def test_the_cached_prompt_tokens_of_every_turn_are_summed_unknown_if_one_is() -> None:
    first = [Started(), ToolCalls((light(),)), Finished("tool_calls", Usage(10, 5, 7))]
    last = [Started(), TextDelta("On."), Finished("stop", Usage(20, 3, 12))]
    res = serve(request("light_set"), Turns("local", first, last), Recorder())
    assert isinstance(res, Result), res
    assert res.usage == Usage(30, 8, 19)
    unknown = [Started(), TextDelta("On."), Finished("stop", Usage(20, 3))]
    res = serve(request("light_set"), Turns("local", first, unknown), Recorder())
    assert isinstance(res, Result), res
    assert res.usage == Usage(30, 8, None)


def test_a_blocked_device_call_is_never_executed_and_the_model_hears_why(
    tmp_path: Path,
) -> None:
    g = rules_guardian(
        tmp_path,
        'name = "home"\n[[rule]]\nid = "door.never"\nkind = "tool"\n'
        'tools = ["unlock_door"]\naction = "block"\n',
    )
    door = ToolCall("call_d", "unlock_door", "{}")
    local = Turns("local", calls(door), answer("I may not open the door."))
    ex = Recorder()
    res = serve(request("unlock_door"), local, ex, guardian=g)
    assert isinstance(res, Result), res
    assert ex.calls == []
    tool_turn = local.requests[1].messages[-1]
    assert tool_turn.role == "tool" and tool_turn.tool_call_id == "call_d"
    assert json.loads(tool_turn.content)["error"] == "blocked"
    assert "door.never" in tool_turn.content
    [step] = res.steps
    assert (step.decision, step.rules, step.outcome) == ("block", ("door.never",), "not_run")
    assert res.guardian is not None and res.guardian.tools == {"door.never": 1}


def test_an_unconfirmed_call_is_not_run(tmp_path: Path) -> None:
    g = rules_guardian(
        tmp_path,
        'name = "home"\n[[rule]]\nid = "light.ask"\nkind = "tool"\n'
        'tools = ["light_set"]\naction = "confirm"\n',
    )
    local = Turns("local", calls(light()), answer("Not switched."))
    ex = Recorder()
    res = serve(request("light_set"), local, ex, guardian=g)
    assert isinstance(res, Result) and ex.calls == []
    assert res.steps[0].decision == "confirm" and res.steps[0].outcome == "not_run"
    assert "not_confirmed" in local.requests[1].messages[-1].content


@pytest.mark.parametrize("room", ["kitchen/../../edged", "+", "#", "a\u0000b", ""])
def test_an_argument_that_is_not_one_topic_level_is_refused(room: str) -> None:
    local = Turns("local", calls(light(room)), answer("Could not."))
    ex = Recorder()
    res = serve(request("light_set"), local, ex)
    assert isinstance(res, Result), res
    assert ex.calls == [], "never published"
    assert res.steps[0].decision == "refused"
    assert json.loads(local.requests[1].messages[-1].content)["error"] == "refused"


def test_no_reply_in_time_is_a_tool_result_saying_so() -> None:
    local = Turns("local", calls(light()), answer("The light did not answer."))
    ex = Recorder({"home/kitchen/light/state": None})
    res = serve(request("light_set"), local, ex)
    assert isinstance(res, Result), res
    content = json.loads(local.requests[1].messages[-1].content)
    assert content["error"] == "timeout" and "home/kitchen/light/state" in content["message"]
    assert res.steps[0].outcome == "timeout" and res.steps[0].decision == "allow"


def test_a_tool_without_reply_topic_answers_sent() -> None:
    door = ToolCall("call_d", "unlock_door", "{}")
    local = Turns("local", calls(door), answer("Opened."))
    ex = Recorder()
    res = serve(request("unlock_door"), local, ex)
    assert isinstance(res, Result)
    assert ex.calls == [("home/door/unlock", "{}", None, 3.0)]
    assert json.loads(local.requests[1].messages[-1].content) == {
        "status": "sent",
        "topic": "home/door/unlock",
    }


def test_client_calls_end_the_turn_alone_and_device_calls_of_it_are_not_run() -> None:
    alarm = ToolCall("call_a", "set_alarm", "{}")
    local = Turns("local", calls(alarm, light(cid="call_2")))
    ex = Recorder()
    res = serve(request("light_set", client=(ALARM,)), local, ex)
    assert isinstance(res, Result), res
    assert res.finish_reason == "tool_calls" and res.tool_calls == (alarm,)
    assert ex.calls == [] and res.steps == ()


def test_device_calls_never_end_a_turn_with_tool_calls_and_the_step_limit_holds() -> None:
    local = Turns(
        "local",
        calls(light(cid="c1")),
        calls(light(cid="c2")),
        calls(light(cid="c3")),
    )
    ex = Recorder()
    res = serve(request("light_set"), local, ex)
    assert isinstance(res, Result), res
    assert len(local.requests) == CFG.agent.max_steps == 3
    assert len(ex.calls) == 2 and len(res.steps) == 2
    assert res.finish_reason == "length" and res.tool_calls == ()


def test_personal_data_in_a_tool_result_keeps_later_turns_on_the_device() -> None:
    g = RuleGuardian(load_packs([ROOT / "configs/guardian/default.toml"]))
    notes = ToolCall("call_n", "notes", "{}")
    cloud = Turns("cloud", calls(notes))
    local = Turns("local", answer("Your note is about Alice."))
    ex = Recorder({"home/notes/value": "mail alice@example.com about the party"})
    res = serve(request("notes", route="cloud"), local, ex, guardian=g, cloud=cloud)
    assert isinstance(res, Result), res
    assert len(cloud.requests) == 1, "the tool result never reaches the remote backend"
    assert len(local.requests) == 1 and res.route.backend == "local"
    assert "alice@example.com" not in json.dumps([m.content for m in cloud.requests[0].messages])


def test_a_forced_device_call_is_not_forced_again() -> None:
    local = Turns("local", calls(light()), answer("Done."))
    req = replace(request("light_set"), tool_choice=ToolChoice("function", "light_set"))
    res = serve(req, local, Recorder())
    assert isinstance(res, Result), res
    assert local.requests[1].tool_choice == ToolChoice("auto")


def test_a_tool_result_an_input_block_rule_fires_on_ends_the_request_blocked() -> None:
    g = RuleGuardian(load_packs([ROOT / "configs/guardian/examples/phrases.toml"]))
    notes = ToolCall("call_n", "notes", "{}")
    local = Turns("local", calls(notes), answer("never asked"))
    ex = Recorder({"home/notes/value": "the launch codes are 1234"})
    err = serve(request("notes"), local, ex, guardian=g)
    assert isinstance(err, EdgedError) and err.code == "blocked", err
    assert "phrase.launch-codes" in err.message
    assert len(local.requests) == 1, "the model never read the result"


def test_an_invalid_device_call_ends_the_request_and_nothing_runs() -> None:
    bad = ToolCall("call_b", "light_set", '{"room": "kitchen"}')  # "on" is required
    local = Turns("local", calls(light(cid="call_ok"), bad))
    ex = Recorder()
    err = serve(request("light_set"), local, ex)
    assert isinstance(err, EdgedError) and err.code == "tool_call_invalid", err
    assert "'on' is a required property" in err.message
    assert ex.calls == []
