"""examples/tool_loop.py's pure pieces: its tools run, and every request it builds (the first
ask and each follow-up with tool turns) is one edged's own parser accepts."""

from __future__ import annotations

import importlib.util
import json
import time
from types import ModuleType
from typing import Any

import pytest

from edged.config import Config
from edged.ingress import wire
from edged.types import Request, ToolCall, ToolChoice
from tests.helpers import ROOT

CFG = Config(device_id="dev1")


@pytest.fixture(scope="module")
def loop() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tool_loop", ROOT / "examples" / "tool_loop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(body: dict[str, Any]) -> Request:
    r = wire.parse_request(
        json.dumps(body).encode(),
        cfg=CFG,
        default_reply_topic=lambda i: f"reply/{i}",
        response_topic=None,
        correlation_data=None,
        received_at_s=0.0,
    )
    assert isinstance(r, Request), r
    return r


def result(*calls: tuple[str, str, str]) -> dict[str, Any]:
    """A result reply as edged encodes it."""
    return {
        "type": "result",
        "text": "",
        "finish_reason": "tool_calls",
        "tool_calls": wire.encode_tool_calls(tuple(ToolCall(*c) for c in calls)),
    }


def test_the_tools_run(loop: ModuleType) -> None:
    alarms = loop.Alarms(clock=lambda: time.struct_time((2026, 12, 3, 6, 5, 0, 3, 337, 0)))
    set_it = {"id": "c1", "function": {"name": "set_alarm", "arguments": '{"hour":6,"minute":30}'}}
    assert json.loads(loop.run_call(alarms, set_it)) == {"ok": True, "alarm": "06:30", "label": ""}
    assert alarms.set == [(6, 30, "")]
    now = {"id": "c2", "function": {"name": "get_time", "arguments": "{}"}}
    assert json.loads(loop.run_call(alarms, now)) == {"time": "06:05"}
    unknown = {"id": "c3", "function": {"name": "launch", "arguments": "{}"}}
    assert "no tool named 'launch'" in json.loads(loop.run_call(alarms, unknown))["error"]
    odd = {"id": "c4", "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}
    assert "error" in json.loads(loop.run_call(alarms, odd))


@pytest.mark.parametrize(
    "choice,expected",
    [
        ("auto", ToolChoice("auto")),
        ("required", ToolChoice("required")),
        ("none", ToolChoice("none")),
        ("set_alarm", ToolChoice("function", "set_alarm")),
    ],
)
def test_the_first_request_is_accepted_with_every_choice(
    loop: ModuleType, choice: str, expected: ToolChoice
) -> None:
    messages = [{"role": "user", "content": "Wake me at 6:30."}]
    req = parse(loop.request_body(messages, 0, choice, 64))
    assert [t.name for t in req.tools] == ["set_alarm", "get_time"]
    assert req.tool_choice == expected
    # follow-ups go back to auto, so the model can answer
    assert parse(loop.request_body(messages, 1, choice, 64)).tool_choice == ToolChoice("auto")


def test_follow_ups_are_accepted_and_carry_the_calls_and_their_results(loop: ModuleType) -> None:
    alarms = loop.Alarms()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Wake me at 6:30, and 7."}]
    first = result(("call_a", "set_alarm", '{"hour":6,"minute":30}'), ("call_b", "get_time", "{}"))
    messages = loop.follow_up(messages, first, alarms)
    req = parse(loop.request_body(messages, 1, "auto", 64))
    assert [m.role for m in req.messages] == ["user", "assistant", "tool", "tool"]
    assert [c.id for c in req.messages[1].tool_calls] == ["call_a", "call_b"]
    assert [m.tool_call_id for m in req.messages[2:]] == ["call_a", "call_b"]
    assert json.loads(req.messages[2].content)["alarm"] == "06:30"
    # a second round on top of the first
    second = result(("call_c", "set_alarm", '{"hour":7,"minute":0,"label":"gym"}'))
    messages = loop.follow_up(messages, second, alarms)
    req = parse(loop.request_body(messages, 2, "auto", 64))
    assert req.messages[-1].tool_call_id == "call_c"
    assert alarms.set == [(6, 30, ""), (7, 0, "gym")]
