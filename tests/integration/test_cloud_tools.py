"""Tool calling on the cloud backend: the real CloudBackend (the OpenAI SDK, real HTTP on
loopback) against a scripted OpenAI-compatible server (tests.scripted_cloud) that streams
exactly what each test says: calls split at every character or UTF-16 code unit, several
calls by index, bad calls, cut streams. What edged promises (docs/tools.md):

- a call is released whole, once (one ``ToolCalls`` right before ``Finished("tool_calls")``),
  its arguments exactly what the server sent; nothing of it before the stream has ended;
- text before a call streams as text;
- a stream cut before its ``finish_reason`` releases nothing;
- a call that breaks its schema or names an unknown tool never passes edged.tools.validate;
- tools, tool_choice, response_format and tool turns reach the server in the OpenAI shapes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.backends.cloud import CloudBackend, CloudFailed
from edged.config import CloudConfig
from edged.errors import ToolCallInvalid
from edged.tools.validate import validate_calls
from edged.types import (
    ChatMessage,
    Finished,
    ReplyAddress,
    Request,
    ResponseFormat,
    Started,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    ToolChoice,
    ToolSpec,
)
from tests.helpers import CloudServer
from tests.scripted_cloud import (
    Answer,
    Call,
    ScriptedCloud,
    call_fragments,
    chunk,
    completion,
    finish,
    stream,
    text,
)
from tests.strategies import json_values

pytestmark = pytest.mark.integration

T = TypeVar("T")

ALARM = ToolSpec(
    "set_alarm",
    "Set an alarm.",
    {
        "type": "object",
        "properties": {
            "hour": {"type": "integer", "minimum": 0, "maximum": 23},
            "minute": {"type": "integer", "minimum": 0, "maximum": 59},
            "label": {"type": "string"},
        },
        "required": ["hour", "minute"],
        "additionalProperties": False,
    },
)
LIGHT = ToolSpec(
    "light",
    "",
    {
        "type": "object",
        "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
        "required": ["room", "on"],
    },
)
#: Arguments with ``\\u`` escapes, a raw non-ASCII character and one outside the BMP.
ARGS = '{"hour": 6, "minute": 30, "label": "caf\\u00e9 \\"w\\u00e4ke\\" ☕ \U0001f600"}'


def request(
    *messages: ChatMessage,
    tools: tuple[ToolSpec, ...] = (ALARM, LIGHT),
    choice: ToolChoice | None = None,
    response_format: ResponseFormat | None = None,
) -> Request:
    return Request(
        id=f"t{uuid.uuid4().hex[:8]}",
        messages=messages or (ChatMessage("user", "Wake me at 6:30."),),
        max_tokens=64,
        temperature=0.0,
        stream=True,
        route="cloud",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
        tools=tools,
        tool_choice=(choice or ToolChoice("auto")) if tools else None,
        response_format=response_format,
    )


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedCloud]:
    s = ScriptedCloud()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def cloud(scripted: ScriptedCloud) -> Iterator[ScriptedCloud]:
    scripted.clear()
    yield scripted
    scripted.clear()


def cfg(server: ScriptedCloud | CloudServer, **kw: Any) -> CloudConfig:
    base: dict[str, Any] = {
        "enabled": True,
        "base_url": server.base_url,
        "connect_timeout_s": 3.0,
        "read_timeout_s": 5.0,
        "first_token_timeout_s": 3.0,
        "retries": 0,
        "breaker_failures": 2,
        "breaker_cooldown_s": 30.0,
    }
    base.update(kw)
    return CloudConfig(**base)


def run(config: CloudConfig, body: Callable[[CloudBackend], Awaitable[T]]) -> T:
    async def main() -> T:
        backend = CloudBackend(name="cloud", cfg=config)
        await backend.start()
        try:
            return await body(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


async def collect(events: AsyncGenerator[StreamEvent, None]) -> list[StreamEvent]:
    async with aclosing(events) as it:
        return [ev async for ev in it]


def answer(server: ScriptedCloud, req: Request, *answers: Answer, **kw: Any) -> list[StreamEvent]:
    """The events the backend yields for ``req`` while the server sends ``answers``."""
    server.script(*answers)
    return run(cfg(server, **kw), lambda b: collect(b.generate(req)))


def released(events: list[StreamEvent]) -> tuple[ToolCall, ...]:
    """The calls, checking the contract: one ToolCalls, whole, right before
    Finished("tool_calls"), after Started and any text."""
    assert isinstance(events[0], Started)
    kinds = [type(e) for e in events]
    assert kinds.count(ToolCalls) == 1, kinds
    assert kinds[-2:] == [ToolCalls, Finished], kinds
    assert set(kinds[1:-2]) <= {TextDelta}, kinds
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.finish_reason == "tool_calls"
    calls = events[-2]
    assert isinstance(calls, ToolCalls)
    return calls.calls


# --- calls released whole ----------------------------------------------------------------------


@pytest.mark.parametrize("units", ["char", "utf16"])
def test_a_call_split_at_every_character_is_released_whole(
    cloud: ScriptedCloud, units: str
) -> None:
    req = request()
    events = answer(
        cloud,
        req,
        stream(call_fragments([Call("set_alarm", ARGS, "call_1")], units=units), finish()),
    )
    (call,) = released(events)
    assert call == ToolCall("call_1", "set_alarm", ARGS)
    assert validate_calls(req, [call]) == (call,)
    fin = events[-1]
    assert isinstance(fin, Finished)
    # no usage from the server: one token per fragment (head + every piece), prompt unknown
    assert fin.usage.prompt_tokens is None and fin.usage.completion_tokens > len(ARGS) // 2


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=4), st.integers(1, 4))
def test_any_json_arguments_split_anywhere_come_back_exactly(
    scripted: ScriptedCloud, obj: dict[str, Any], size: int
) -> None:
    arguments = json.dumps(obj)
    events = answer(
        scripted,
        request(),
        stream(call_fragments([Call("light", arguments, "c")], size=size), finish("tool_calls")),
    )
    (call,) = released(events)
    assert call.arguments == arguments


def test_text_before_a_call_streams_as_text(cloud: ScriptedCloud) -> None:
    req = request()
    events = answer(
        cloud,
        req,
        stream(text("Setting", " it."), call_fragments([Call("set_alarm", ARGS, "a")]), finish()),
    )
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Setting", " it."]
    assert released(events) == (ToolCall("a", "set_alarm", ARGS),)


def test_several_calls_by_index_interleaved_come_back_in_index_order(
    cloud: ScriptedCloud,
) -> None:
    calls = [
        Call("set_alarm", '{"hour": 7, "minute": 0}', "a"),
        Call("light", '{"room": "kitchen", "on": false}', "b"),
        Call("light", '{"room": "hall", "on": true}', "c"),
    ]
    frags = call_fragments(calls, size=2, interleave=True)
    # the server starts call 2 first: order on the wire is not index order
    frags = frags[2:3] + frags[:2] + frags[3:]
    req = request()
    got = released(answer(cloud, req, stream(frags, finish("tool_calls"))))
    assert got == tuple(ToolCall(c.id or "", c.name, c.arguments) for c in calls)
    assert validate_calls(req, got) == got


def test_finish_reason_stop_with_calls_means_calls(cloud: ScriptedCloud) -> None:
    events = answer(
        cloud,
        request(),
        stream(call_fragments([Call("light", '{"room":"a","on":true}')]), finish("stop")),
    )
    (call,) = released(events)
    assert call.id == "" and call.name == "light"  # no id sent: the validator assigns one
    (valid,) = validate_calls(request(), [call])
    assert valid.id.startswith("call_")


def test_no_arguments_fragment_is_an_empty_object(cloud: ScriptedCloud) -> None:
    events = answer(cloud, request(), stream(call_fragments([Call("light", "", "x")]), finish()))
    assert released(events) == (ToolCall("x", "light", "{}"),)


def test_usage_from_the_server_is_reported(cloud: ScriptedCloud) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    events = answer(
        cloud,
        request(),
        stream(call_fragments([Call("set_alarm", ARGS, "a")]), finish("tool_calls", usage)),
    )
    released(events)
    fin = events[-1]
    assert isinstance(fin, Finished)
    assert (fin.usage.prompt_tokens, fin.usage.completion_tokens) == (12, 9)


def test_a_non_streamed_answer_with_tool_calls(cloud: ScriptedCloud) -> None:
    body = completion(
        None,
        [Call("set_alarm", ARGS, "a"), Call("light", '{"room": "x", "on": true}', "b")],
        "tool_calls",
        {"prompt_tokens": 5, "completion_tokens": 7},
    )
    req = request()
    got = released(answer(cloud, req, Answer(body=body)))
    assert [(c.id, c.name) for c in got] == [("a", "set_alarm"), ("b", "light")]
    assert got[0].arguments == ARGS
    assert validate_calls(req, got) == got


def test_a_non_streamed_text_answer(cloud: ScriptedCloud) -> None:
    events = answer(cloud, request(), Answer(body=completion("Hello.", finish_reason="stop")))
    assert [type(e) for e in events] == [Started, TextDelta, Finished]
    assert isinstance(events[1], TextDelta) and events[1].text == "Hello."


def test_a_slow_call_is_not_cut_by_the_first_token_wait(cloud: ScriptedCloud) -> None:
    # the first fragment comes at once, the whole call takes ~1 s: over the 0.5 s first-token
    # wait, which is about a server that hangs, not one that answers slowly
    arguments = '{"hour": 6, "minute": 30}'
    events = answer(
        cloud,
        request(),
        stream(call_fragments([Call("set_alarm", arguments, "a")], size=1), finish(), pace_s=0.04),
        first_token_timeout_s=0.5,
    )
    assert released(events)[0].arguments == arguments


# --- nothing released --------------------------------------------------------------------------


def test_a_stream_cut_in_the_middle_of_a_call_releases_nothing(cloud: ScriptedCloud) -> None:
    frags = call_fragments([Call("set_alarm", ARGS, "a")])
    seen: list[StreamEvent] = []

    async def body(b: CloudBackend) -> CloudFailed:
        with pytest.raises(CloudFailed) as info:
            async with aclosing(b.generate(request())) as events:
                async for ev in events:
                    seen.append(ev)
        return info.value

    cloud.script(stream(text("On it."), frags[: len(frags) // 2], cut=True))
    err = run(cfg(cloud), body)
    assert not any(isinstance(e, ToolCalls | Finished) for e in seen), seen
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["On it."]  # text streamed
    assert err.before_first_token is False  # text was yielded: no fallback may repeat it


def test_a_stream_cut_before_any_text_is_retried_and_only_the_whole_call_released(
    cloud: ScriptedCloud,
) -> None:
    frags = call_fragments([Call("set_alarm", ARGS, "a")])
    events = answer(
        cloud,
        request(),
        stream(frags[:5], cut=True),  # ends before its finish_reason
        stream(frags, finish()),
        retries=1,
    )
    assert released(events) == (ToolCall("a", "set_alarm", ARGS),)
    assert len(cloud.bodies) == 2


def test_a_stream_ending_without_finish_reason_releases_nothing(cloud: ScriptedCloud) -> None:
    cloud.script(stream(call_fragments([Call("set_alarm", ARGS, "a")])))  # [DONE], no finish

    async def body(b: CloudBackend) -> tuple[list[StreamEvent], CloudFailed]:
        seen: list[StreamEvent] = []
        with pytest.raises(CloudFailed) as info:
            async with aclosing(b.generate(request())) as events:
                async for ev in events:
                    seen.append(ev)
        return seen, info.value

    seen, err = run(cfg(cloud), body)
    assert [type(e) for e in seen] == [Started]
    assert err.before_first_token and "finish reason" in err.message


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ('{"hour": 25, "minute": 0}', "arguments.hour: 25 is greater than the maximum of 23"),
        ('{"hour": 6}', "'minute' is a required property"),
        ('{"hour": 6, "minute": 0, "extra": 1}', "Additional properties"),
        ('{"hour": 6, "minute": ', "not valid JSON"),
        ("[6, 30]", "must be a JSON object"),
        ('{"hour": 6, "hour": 7, "minute": 0}', "duplicate key"),
    ],
)
def test_bad_arguments_are_never_valid(cloud: ScriptedCloud, arguments: str, problem: str) -> None:
    req = request()
    events = answer(
        cloud, req, stream(call_fragments([Call("set_alarm", arguments, "a")]), finish())
    )
    (call,) = released(events)  # the backend passes them on exactly; the validator decides
    assert call.arguments == arguments
    with pytest.raises(ToolCallInvalid, match="set_alarm") as info:
        validate_calls(req, [call])
    assert problem in info.value.message


def test_an_unknown_tool_is_never_valid(cloud: ScriptedCloud) -> None:
    req = request()
    events = answer(cloud, req, stream(call_fragments([Call("rm_rf", "{}", "a")]), finish()))
    with pytest.raises(ToolCallInvalid, match="unknown tool 'rm_rf'"):
        validate_calls(req, released(events))


def test_a_call_against_a_named_choice_is_never_valid(cloud: ScriptedCloud) -> None:
    req = request(choice=ToolChoice("function", "set_alarm"))
    events = answer(
        cloud, req, stream(call_fragments([Call("light", '{"room":"a","on":true}', "a")]), finish())
    )
    with pytest.raises(ToolCallInvalid, match="tool_choice named 'set_alarm'"):
        validate_calls(req, released(events))


def _protocol_error(
    cloud: ScriptedCloud, *answers: Answer, **kw: Any
) -> tuple[list[StreamEvent], ToolCallInvalid, CloudBackend]:
    cloud.script(*answers)
    seen: list[StreamEvent] = []

    async def body(b: CloudBackend) -> tuple[ToolCallInvalid, CloudBackend]:
        with pytest.raises(ToolCallInvalid) as info:
            async with aclosing(b.generate(request())) as events:
                async for ev in events:
                    seen.append(ev)
        return info.value, b

    err, backend = run(cfg(cloud, **kw), body)
    return seen, err, backend


@pytest.mark.parametrize(
    ("events", "match"),
    [
        (  # the id changes half way
            call_fragments([Call("light", '{"room": "a"}', "a")])
            + call_fragments([Call("light", "", "b")])[:1]
            + finish(),
            "changed its id from 'a' to 'b'",
        ),
        (  # a fragment without index after calls 0 and 1
            [
                *call_fragments([Call("light", "{}", "a"), Call("light", "{}", "b")]),
                chunk({"tool_calls": [{"function": {"arguments": "x"}}]}),
                *finish(),
            ],
            "without an index",
        ),
        (call_fragments([Call("light", "{}", "a")]) + finish("length"), "finish_reason length"),
        (text("Done.") + finish("tool_calls"), "sent no call"),
    ],
)
def test_protocol_errors_release_nothing_and_do_not_trip_the_breaker(
    cloud: ScriptedCloud, events: list[Any], match: str
) -> None:
    # breaker_failures=2: two protocol errors in a row would open it if they counted
    for _ in range(2):
        seen, err, backend = _protocol_error(cloud, stream(events), retries=1)
        assert not any(isinstance(e, ToolCalls) for e in seen), seen
        assert err.code == "tool_call_invalid"
        assert err.message.startswith("cloud: ") and match in err.message, err.message
        assert backend.breaker.state == "closed" and backend.breaker.consecutive_failures == 0
    assert len(cloud.bodies) == 2  # never retried


def test_over_the_per_call_limit_is_stopped_as_it_arrives(cloud: ScriptedCloud) -> None:
    huge = '{"label": "' + "x" * 70_000 + '"}'
    seen, err, _ = _protocol_error(
        cloud, stream(call_fragments([Call("set_alarm", huge, "a")], size=4096), finish())
    )
    assert "over 65536 bytes" in err.message
    assert not any(isinstance(e, ToolCalls) for e in seen)


# --- what edged sends ----------------------------------------------------------------------------


def sent(cloud: ScriptedCloud, req: Request) -> dict[str, Any]:
    answer(cloud, req, stream(text("ok"), finish()))
    return cloud.last


def test_tools_and_tool_choice_pass_through_in_the_openai_shape(cloud: ScriptedCloud) -> None:
    body = sent(cloud, request())
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "set_alarm",
                "description": "Set an alarm.",
                "parameters": ALARM.parameters,
            },
        },
        {"type": "function", "function": {"name": "light", "parameters": LIGHT.parameters}},
    ]
    assert body["tool_choice"] == "auto"
    assert "response_format" not in body
    assert body["stream"] is True and body["max_tokens"] == 64


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (ToolChoice("none"), "none"),
        (ToolChoice("required"), "required"),
        (ToolChoice("function", "light"), {"type": "function", "function": {"name": "light"}}),
    ],
)
def test_every_tool_choice_passes_through(
    cloud: ScriptedCloud, choice: ToolChoice, wire: object
) -> None:
    assert sent(cloud, request(choice=choice))["tool_choice"] == wire


def test_a_request_without_tools_sends_none_of_the_fields(cloud: ScriptedCloud) -> None:
    body = sent(cloud, request(tools=()))
    assert not {"tools", "tool_choice", "response_format"} & set(body)


@pytest.mark.parametrize(
    ("fmt", "wire"),
    [
        (ResponseFormat("text"), {"type": "text"}),
        (ResponseFormat("json_object"), {"type": "json_object"}),
        (
            ResponseFormat("json_schema", "alarm", ALARM.parameters, True),
            {
                "type": "json_schema",
                "json_schema": {"name": "alarm", "schema": ALARM.parameters, "strict": True},
            },
        ),
        (
            ResponseFormat("json_schema", None, {"type": "object"}, False),
            {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": {"type": "object"}, "strict": False},
            },
        ),
    ],
)
def test_response_format_passes_through(
    cloud: ScriptedCloud, fmt: ResponseFormat, wire: dict[str, Any]
) -> None:
    assert sent(cloud, request(tools=(), response_format=fmt))["response_format"] == wire


def test_tool_turns_are_sent_in_the_openai_shape(cloud: ScriptedCloud) -> None:
    calls = (
        ToolCall("call_1", "set_alarm", '{"hour": 6, "minute": 30}'),
        ToolCall("call_2", "light", '{"room": "hall", "on": true}'),
    )
    req = request(
        ChatMessage("system", "You are a clock."),
        ChatMessage("user", "Wake me at 6:30 and turn on the hall light."),
        ChatMessage("assistant", "", tool_calls=calls),
        ChatMessage("tool", '{"ok": true}', tool_call_id="call_1"),
        ChatMessage("tool", '{"ok": false}', tool_call_id="call_2"),
        ChatMessage("assistant", "Alarm set; the light failed.", tool_calls=calls[:1]),
        ChatMessage("assistant", ""),
        ChatMessage("user", "Thanks."),
    )
    assert sent(cloud, req)["messages"] == [
        {"role": "system", "content": "You are a clock."},
        {"role": "user", "content": "Wake me at 6:30 and turn on the hall light."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "set_alarm", "arguments": '{"hour": 6, "minute": 30}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "light", "arguments": '{"room": "hall", "on": true}'},
                },
            ],
        },
        {"role": "tool", "content": '{"ok": true}', "tool_call_id": "call_1"},
        {"role": "tool", "content": '{"ok": false}', "tool_call_id": "call_2"},
        {
            "role": "assistant",
            "content": "Alarm set; the light failed.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "set_alarm", "arguments": '{"hour": 6, "minute": 30}'},
                }
            ],
        },
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Thanks."},
    ]


# --- a real server: llama.cpp's, with its function-calling chat format -------------------------


@pytest.fixture(scope="module")
def llama_tools_server(
    model_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudServer]:
    """``llama_cpp.server --chat_format chatml-function-calling`` on the default model: it
    streams a call for a named ``tool_choice``; it has no ``required`` (it fails the request
    after HTTP 200 with an empty stream) and answers ``auto`` with text only
    (llama-cpp-python #1883)."""
    server = CloudServer(
        model_file,
        tmp_path_factory.mktemp("cloud-tools"),
        extra_args=("--chat_format", "chatml-function-calling"),
    )
    server.start()
    yield server
    server.stop()


def test_a_real_server_streams_a_named_call_and_edged_releases_it_whole_or_not_at_all(
    llama_tools_server: CloudServer,
) -> None:
    req = request(choice=ToolChoice("function", "set_alarm"))
    config = cfg(llama_tools_server, read_timeout_s=30.0, first_token_timeout_s=30.0)
    events = run(config, lambda b: collect(b.generate(req)))
    (call,) = released(events)
    assert call.name == "set_alarm" and call.id
    assert isinstance(json.loads(call.arguments), dict)
    # the 135M model may break the schema (llama-cpp-python's grammar ignores minimum and
    # maximum); either way the validator decides, and an invalid call never passes
    try:
        assert validate_calls(req, [call]) == (call,)
    except ToolCallInvalid as e:
        assert "set_alarm" in e.message
    sent = llama_tools_server.proxy.received()
    assert b'"tool_choice":{"type":"function","function":{"name":"set_alarm"}}' in sent.replace(
        b" ", b""
    )


def test_a_real_server_without_required_fails_before_the_first_token(
    llama_tools_server: CloudServer,
) -> None:
    req = request(choice=ToolChoice("required"))
    config = cfg(llama_tools_server, read_timeout_s=30.0, first_token_timeout_s=30.0)

    async def body(b: CloudBackend) -> CloudFailed:
        with pytest.raises(CloudFailed) as info:
            await collect(b.generate(req))
        return info.value

    err = run(config, body)
    assert err.before_first_token  # nothing released: the pipeline may serve it locally
