"""The pipeline's one check on tool calls and structured answers, with a scripted backend.

Whatever a backend sends, a call reaches the client only whole, for a tool the request
offered, allowed by ``tool_choice``, with arguments that validate; a structured answer only
when its text validates. Everything else ends the request with ``tool_call_invalid``.
(The real backends are tested in tests/integration; the scripted one here sends what a
broken remote could.)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import pytest

from edged.config import PolicyConfig, RouterConfig
from edged.energy.meter import NullMeter
from edged.errors import EdgedError, ToolCallInvalid, Unavailable
from edged.guardian import PassGuardian
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.types import (
    ChatMessage,
    Finished,
    ReplyAddress,
    Request,
    ResponseFormat,
    Result,
    Started,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    ToolChoice,
    ToolSpec,
    Usage,
)
from tests.unit.doubles import Script, Sink

ALARM = ToolSpec(
    "set_alarm",
    "Set an alarm",
    {
        "type": "object",
        "properties": {
            "hour": {"type": "integer", "minimum": 0, "maximum": 23},
            "minute": {"type": "integer", "minimum": 0, "maximum": 59},
        },
        "required": ["hour", "minute"],
        "additionalProperties": False,
    },
)
LIGHT = ToolSpec(
    "light",
    "Switch a light",
    {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]},
)


def request(**kw: Any) -> Request:
    base = Request(
        id="t1",
        messages=(ChatMessage("user", "wake me at 6:30"),),
        max_tokens=64,
        temperature=0.0,
        stream=True,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
        tools=(ALARM, LIGHT),
        tool_choice=ToolChoice("auto"),
    )
    return replace(base, **kw)


def run(events: list[StreamEvent], req: Request, supports_tools: bool = True) -> Sink:
    sink = Sink()
    backends = {"local": Script(events, supports_tools=supports_tools)}
    router = Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends)
    p = Pipeline(guardian=PassGuardian(), router=router, backends=backends, meter=NullMeter())
    asyncio.run(p.handle(req, sink))
    assert len(sink.finals) == 1, "exactly one final reply"
    return sink


def calls_then_finish(*calls: ToolCall, reason: str = "tool_calls") -> list[StreamEvent]:
    return [Started(), ToolCalls(calls), Finished(reason, Usage(10, 12))]  # type: ignore[arg-type]


def error_of(sink: Sink) -> EdgedError:
    err = sink.finals[0]
    assert isinstance(err, EdgedError), err
    return err


def test_a_valid_call_is_released_whole_with_finish_reason_tool_calls() -> None:
    call = ToolCall("call_1", "set_alarm", '{"hour": 6, "minute": 30}')
    events: list[StreamEvent] = [Started(), TextDelta("Setting it. "), *calls_then_finish(call)[1:]]
    sink = run(events, request())
    res = sink.finals[0]
    assert isinstance(res, Result)
    assert res.finish_reason == "tool_calls"
    assert res.tool_calls == (call,)
    assert sink.chunks == ["Setting it. "], "only text streams; a call never does"
    assert res.timing.ttft_ms is not None


def test_a_call_without_id_gets_a_unique_one_and_stop_with_calls_means_tool_calls() -> None:
    a = ToolCall("", "set_alarm", '{"hour": 7, "minute": 0}')
    b = ToolCall("", "light", '{"on": true}')
    res = run(calls_then_finish(a, b, reason="stop"), request()).finals[0]
    assert isinstance(res, Result) and res.finish_reason == "tool_calls"
    ids = [c.id for c in res.tool_calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2
    assert [c.name for c in res.tool_calls] == ["set_alarm", "light"]


@pytest.mark.parametrize(
    ("call", "req", "expect"),
    [
        (ToolCall("c", "open_door", "{}"), request(), "unknown tool 'open_door'"),
        (ToolCall("c", "set_alarm", '{"hour": 24, "minute": 0}'), request(), "arguments.hour"),
        (ToolCall("c", "set_alarm", '{"hour": 6}'), request(), "'minute' is a required"),
        (ToolCall("c", "set_alarm", '{"hour": 6, "minute": 1, "x": 1}'), request(), "x"),
        (ToolCall("c", "set_alarm", '{"hour": 6, "minute": '), request(), "not valid JSON"),
        (ToolCall("c", "set_alarm", "[6, 30]"), request(), "must be a JSON object"),
        (
            ToolCall("c", "set_alarm", '{"hour": 6, "hour": 7, "minute": 0}'),
            request(),
            "duplicate key",
        ),
        (ToolCall("c", "set_alarm", '{"hour": NaN, "minute": 0}'), request(), "not valid JSON"),
        (
            ToolCall("c", "light", '{"on": true}'),
            request(tool_choice=ToolChoice("function", "set_alarm")),
            "tool_choice named",
        ),
        (
            ToolCall("c", "light", '{"on": true}'),
            request(tool_choice=ToolChoice("none")),
            "offered none",
        ),
        (
            ToolCall("c", "light", '{"on": true}'),
            request(tools=(), tool_choice=None),
            "offered none",
        ),
    ],
)
def test_an_invalid_call_is_never_released(call: ToolCall, req: Request, expect: str) -> None:
    sink = run(calls_then_finish(call), req)
    err = error_of(sink)
    assert isinstance(err, ToolCallInvalid) and err.code == "tool_call_invalid"
    assert expect in err.message
    assert sink.chunks == []


def test_one_bad_call_holds_back_the_good_ones_too() -> None:
    good = ToolCall("a", "light", '{"on": false}')
    bad = ToolCall("b", "set_alarm", '{"hour": -1, "minute": 0}')
    err = error_of(run(calls_then_finish(good, bad), request()))
    assert "tool_calls[1] (set_alarm)" in err.message


def test_two_calls_with_one_id_are_refused() -> None:
    a = ToolCall("same", "light", '{"on": false}')
    err = error_of(run(calls_then_finish(a, a), request()))
    assert "used twice" in err.message


def test_required_or_named_choice_answered_in_text_is_an_error() -> None:
    text: list[StreamEvent] = [Started(), TextDelta("I did it."), Finished("stop", Usage(1, 3))]
    for choice in (ToolChoice("required"), ToolChoice("function", "light")):
        err = error_of(run(text, request(tool_choice=choice)))
        assert isinstance(err, ToolCallInvalid) and "answered in text" in err.message
    # auto lets the model answer in text
    res = run(text, request()).finals[0]
    assert isinstance(res, Result) and res.text == "I did it." and res.tool_calls == ()


def test_finish_reason_tool_calls_without_calls_is_an_error() -> None:
    events: list[StreamEvent] = [Started(), Finished("tool_calls", Usage(1, 1))]
    assert "sent none" in error_of(run(events, request())).message


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
}


def answer(text: str, reason: str = "stop") -> list[StreamEvent]:
    return [Started(), TextDelta(text), Finished(reason, Usage(1, 5))]  # type: ignore[arg-type]


def test_structured_answers_must_validate() -> None:
    fmt = ResponseFormat("json_schema", name="forecast", schema=SCHEMA)
    req = request(tools=(), tool_choice=None, response_format=fmt)
    ok = run(answer('{"city": "Oslo", "days": 3}'), req).finals[0]
    assert isinstance(ok, Result) and json.loads(ok.text) == {"city": "Oslo", "days": 3}
    for bad, why in [
        ('{"city": "Oslo", "days": 0}', "days"),
        ('{"city": "Oslo"}', "'days' is a required"),
        ('{"city": "Oslo", "days": 3', "not JSON"),
        ("Sure! Here it is", "not JSON"),
    ]:
        err = error_of(run(answer(bad), req))
        assert isinstance(err, ToolCallInvalid) and why in err.message, err.message
    # cut at max_tokens: the JSON is incomplete, and the client is told
    err = error_of(run(answer('{"city": "Os', "length"), req))
    assert "not JSON" in err.message


def test_json_object_answers_must_be_one_object() -> None:
    req = request(tools=(), tool_choice=None, response_format=ResponseFormat("json_object"))
    assert isinstance(run(answer('{"a": [1, 2]}'), req).finals[0], Result)
    assert "not a JSON object" in error_of(run(answer("[1, 2]"), req)).message


def test_a_cancelled_structured_answer_is_not_judged_as_json() -> None:
    req = request(tools=(), tool_choice=None, response_format=ResponseFormat("json_object"))
    res = run(answer('{"a": ', "cancelled"), req).finals[0]
    assert isinstance(res, Result) and res.finish_reason == "cancelled"


def test_a_request_with_tools_is_not_sent_to_a_backend_without_them() -> None:
    call = ToolCall("c", "light", '{"on": true}')
    err = error_of(run(calls_then_finish(call), request(), supports_tools=False))
    assert isinstance(err, Unavailable) and "tools" in err.message
    # without tools the same backend serves
    res = run(answer("hello"), request(tools=(), tool_choice=None), supports_tools=False)
    assert isinstance(res.finals[0], Result)
