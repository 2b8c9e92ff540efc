"""Tool calling on the wire: ``tools``, ``tool_choice``, ``response_format``, tool turns and
assistant turns with calls (edged/ingress/tools_wire.py through wire.parse_request), the
result's ``tool_calls``, and the journal records of all of it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.config import Config
from edged.errors import WIRE_CODES
from edged.ingress import wire
from edged.ingress.journal import Journal, request_from_record, request_record
from edged.types import (
    ChatMessage,
    EnergyReport,
    Request,
    ResponseFormat,
    Result,
    RouteDecision,
    Timing,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)

CFG = Config(device_id="dev1")

ALARM_PARAMS = {
    "type": "object",
    "properties": {
        "hour": {"type": "integer", "minimum": 0, "maximum": 23},
        "minute": {"type": "integer", "minimum": 0, "maximum": 59},
        "label": {"type": "string", "maxLength": 24},
    },
    "required": ["hour", "minute"],
    "additionalProperties": False,
}
ALARM = {
    "type": "function",
    "function": {"name": "set_alarm", "description": "Set an alarm.", "parameters": ALARM_PARAMS},
}
TIME = {"type": "function", "function": {"name": "get_time"}}  # no description, no parameters


def parse(body: Any, cfg: Config = CFG) -> Request | wire.Rejection:
    return wire.parse_request(
        json.dumps(body).encode(),
        cfg=cfg,
        default_reply_topic=lambda rid: f"edged/dev1/response/{rid}",
        response_topic=None,
        correlation_data=None,
        received_at_s=100.0,
    )


def ok(body: Any, cfg: Config = CFG) -> Request:
    r = parse(body, cfg)
    assert isinstance(r, Request), r
    return r


def refused(body: Any, cfg: Config = CFG) -> str:
    r = parse({"id": "t1", **body}, cfg)
    assert isinstance(r, wire.Rejection), r
    assert r.error.code == "bad_request", r.error
    assert r.id == "t1" and r.reply is not None  # the client hears why
    return r.error.message


def call(
    cid: str = "call_1", name: str = "set_alarm", args: str = '{"hour":6,"minute":30}'
) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def loop(*calls: dict[str, Any], results: list[tuple[str, str]] | None = None) -> list[Any]:
    """A user turn, an assistant turn with ``calls``, and a tool turn per call."""
    calls = calls or (call(),)
    answered = results if results is not None else [(c["id"], "done") for c in calls]
    return [
        {"role": "user", "content": "Wake me at 6:30."},
        {"role": "assistant", "content": None, "tool_calls": list(calls)},
        *({"role": "tool", "tool_call_id": i, "content": c} for i, c in answered),
    ]


# --- what is accepted -------------------------------------------------------------------------


def test_tools_become_tool_specs_and_the_choice_defaults_to_auto() -> None:
    req = ok({"prompt": "Wake me at 6:30.", "tools": [ALARM, TIME]})
    assert req.tools == (
        ToolSpec("set_alarm", "Set an alarm.", ALARM_PARAMS),
        ToolSpec("get_time", "", {"type": "object", "properties": {}}),
    )
    assert req.tool_choice == ToolChoice("auto")
    assert req.response_format is None


def test_without_tools_there_is_no_choice() -> None:
    req = ok({"prompt": "hi"})
    assert req.tools == () and req.tool_choice is None
    req = ok({"prompt": "hi", "tools": None, "tool_choice": None, "response_format": None})
    assert req.tools == () and req.tool_choice is None and req.response_format is None


@pytest.mark.parametrize(
    "choice,expected",
    [
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        (
            {"type": "function", "function": {"name": "get_time"}},
            ToolChoice("function", "get_time"),
        ),
    ],
)
def test_every_tool_choice(choice: Any, expected: ToolChoice) -> None:
    assert (
        ok({"prompt": "x", "tools": [ALARM, TIME], "tool_choice": choice}).tool_choice == expected
    )


def test_strict_on_a_function_is_accepted() -> None:
    strict = {"type": "function", "function": {**ALARM["function"], "strict": True}}
    assert ok({"prompt": "x", "tools": [strict]}).tools[0].name == "set_alarm"


def test_response_formats() -> None:
    assert ok({"prompt": "x", "response_format": {"type": "text"}}).response_format is None
    assert ok({"prompt": "x", "response_format": {"type": "json_object"}}).response_format == (
        ResponseFormat("json_object")
    )
    fmt = {"name": "alarm", "schema": ALARM_PARAMS, "strict": True, "description": "an alarm"}
    got = ok({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": fmt}})
    assert got.response_format == ResponseFormat("json_schema", "alarm", ALARM_PARAMS, True)
    fmt = {"name": "n", "schema": {"type": "array", "items": {"type": "string"}}, "strict": False}
    got = ok({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": fmt}})
    assert got.response_format == ResponseFormat("json_schema", "n", fmt["schema"], False)


def test_a_whole_loop_turn_becomes_chat_messages() -> None:
    req = ok({"messages": loop(), "tools": [ALARM]})
    assert req.messages == (
        ChatMessage("user", "Wake me at 6:30."),
        ChatMessage("assistant", "", (ToolCall("call_1", "set_alarm", '{"hour":6,"minute":30}'),)),
        ChatMessage("tool", "done", (), "call_1"),
    )


def test_the_follow_up_may_leave_the_tools_out_and_an_assistant_may_say_something() -> None:
    msgs = loop()
    msgs[1]["content"] = "Setting it."
    del msgs[1]["content"]  # absent is null too
    req = ok({"messages": msgs})
    assert req.tools == () and req.messages[1].content == ""
    msgs[1]["content"] = "Setting it."
    assert ok({"messages": msgs}).messages[1].content == "Setting it."


def test_parallel_calls_answered_in_any_order_then_the_conversation_goes_on() -> None:
    msgs = loop(call("a"), call("b", "get_time", "{}"), results=[("b", "07:00"), ("a", "set")])
    msgs += [
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "And at 7?"},
        {"role": "assistant", "content": None, "tool_calls": [call("c")]},
        {"role": "tool", "tool_call_id": "c", "content": ""},
    ]
    req = ok({"messages": msgs, "tools": [ALARM, TIME]})
    assert [m.role for m in req.messages][-2:] == ["assistant", "tool"]
    assert [c.id for c in req.messages[1].tool_calls] == ["a", "b"]


# --- what is refused, each naming the path ----------------------------------------------------

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "x", "tools": {}}, "tools: must be a list of tools"),
    ({"prompt": "x", "tools": []}, "tools: must list at least one tool"),
    ({"prompt": "x", "tools": [5]}, "tools[0]: must be an object"),
    ({"prompt": "x", "tools": [{"function": {"name": "a"}}]}, "tools[0].type: required"),
    ({"prompt": "x", "tools": [{"type": "function"}]}, "tools[0].function: required"),
    (
        {"prompt": "x", "tools": [{"type": "retrieval", "function": {"name": "a"}}]},
        "tools[0].type: must be one of ['function']",
    ),
    (
        {"prompt": "x", "tools": [{"type": "function", "function": {"name": "a"}, "x": 1}]},
        "tools[0].x: unknown field",
    ),
    (
        {"prompt": "x", "tools": [{"type": "function", "function": "a"}]},
        "tools[0].function: must be an object",
    ),
    (
        {"prompt": "x", "tools": [{"type": "function", "function": {}}]},
        "tools[0].function.name: required",
    ),
    (
        {"prompt": "x", "tools": [{"type": "function", "function": {"name": 5}}]},
        "tools[0].function.name: must be a string",
    ),
    (
        {"prompt": "x", "tools": [{"type": "function", "function": {"name": "a b"}}]},
        "tools[0].function.name: must be 1-64 characters of [A-Za-z0-9_-]",
    ),
    (
        {"prompt": "x", "tools": [TIME, TIME]},
        "tools[1].function.name: tool 'get_time' is offered twice",
    ),
    (
        {
            "prompt": "x",
            "tools": [{"type": "function", "function": {"name": "a", "description": 1}}],
        },
        "tools[0].function.description: must be a string",
    ),
    (
        {
            "prompt": "x",
            "tools": [{"type": "function", "function": {"name": "a", "strict": "yes"}}],
        },
        "tools[0].function.strict: must be a boolean",
    ),
    (
        {"prompt": "x", "tools": [{"type": "function", "function": {"name": "a", "returns": {}}}]},
        "tools[0].function.returns: unknown field",
    ),
    (
        {
            "prompt": "x",
            "tools": [
                {"type": "function", "function": {"name": "a", "parameters": {"type": "string"}}}
            ],
        },
        "tools[0].function.parameters.type: a tool's parameters must be an object schema",
    ),
    (
        {
            "prompt": "x",
            "tools": [
                TIME,
                {
                    "type": "function",
                    "function": {
                        "name": "b",
                        "parameters": {
                            "type": "object",
                            "properties": {"hour": {"type": "integer", "multipleOf": 1}},
                        },
                    },
                },
            ],
        },
        "tools[1].function.parameters.properties.hour: unsupported JSON Schema keyword "
        '"multipleOf"',
    ),
    ({"prompt": "x", "tool_choice": "auto"}, "tool_choice: given without tools"),
    ({"prompt": "x", "tool_choice": "none"}, "tool_choice: given without tools"),
    (
        {"prompt": "x", "tools": [TIME], "tool_choice": "any"},
        "tool_choice: must be one of ['auto', 'none', 'required']",
    ),
    ({"prompt": "x", "tools": [TIME], "tool_choice": 1}, "tool_choice: must be an object"),
    (
        {"prompt": "x", "tools": [TIME], "tool_choice": {"type": "function"}},
        "tool_choice.function: required",
    ),
    (
        {
            "prompt": "x",
            "tools": [TIME],
            "tool_choice": {"type": "tool", "function": {"name": "get_time"}},
        },
        "tool_choice.type: must be one of ['function']",
    ),
    (
        {
            "prompt": "x",
            "tools": [TIME],
            "tool_choice": {"type": "function", "function": {"name": "set_alarm"}},
        },
        "tool_choice.function.name: \"set_alarm\" is not one of the tools ['get_time']",
    ),
    (
        {"prompt": "x", "tools": [TIME], "tool_choice": {"type": "function", "function": {}}},
        "tool_choice.function.name: required",
    ),
    (
        {"prompt": "x", "response_format": "json"},
        'response_format: must be an object with a "type"',
    ),
    (
        {"prompt": "x", "response_format": {"type": "xml"}},
        "response_format.type: must be one of ['text', 'json_object', 'json_schema']",
    ),
    (
        {"prompt": "x", "response_format": {"type": "text", "x": 1}},
        "response_format.x: unknown field",
    ),
    (
        {"prompt": "x", "response_format": {"type": "json_schema"}},
        "response_format.json_schema: required",
    ),
    (
        {"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        "response_format.json_schema.name: required",
    ),
    (
        {"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
        "response_format.json_schema.schema: required",
    ),
    (
        {
            "prompt": "x",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a b", "schema": {}},
            },
        },
        "response_format.json_schema.name: must be 1-64 characters",
    ),
    (
        {
            "prompt": "x",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {}, "strict": 1},
            },
        },
        "response_format.json_schema.strict: must be a boolean",
    ),
    (
        {
            "prompt": "x",
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "a",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "x": {"type": "integer"},
                            "when": {"type": "string", "format": "date"},
                        },
                    },
                },
            },
        },
        "response_format.json_schema.schema.properties.when: unsupported JSON Schema "
        'keyword "format"',
    ),
    # messages
    (
        {"messages": [{"role": "user"}]},
        "messages[0].content: required (null only on an assistant turn with tool_calls)",
    ),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content: required"),
    (
        {"messages": [{"role": "user", "content": "x", "tool_calls": [call()]}]},
        "messages[0].tool_calls: only an assistant turn makes calls",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "user", "content": "y"},
            ]
        },
        "messages[1].tool_calls: must not be empty",
    ),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]},
        "messages[1].tool_call_id: required on a tool turn",
    ),
    (
        {"messages": [{"role": "user", "content": "x", "tool_call_id": "a"}]},
        "messages[0].tool_call_id: only a tool turn carries it",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "a", "content": "r"},
            ]
        },
        'messages[1].tool_call_id: "a" matches no call of an earlier assistant turn',
    ),
    (
        {"messages": loop(results=[("nope", "r")])},
        'messages[2].tool_call_id: "nope" matches no call of an earlier assistant turn; '
        'open calls: "call_1"',
    ),
    (
        {"messages": loop(results=[("call_1", "r"), ("call_1", "again")])},
        'messages[3].tool_call_id: call "call_1" is answered twice',
    ),
    ({"messages": loop(results=[])}, "the last message must have role 'user' or 'tool'"),
    (
        {"messages": [*loop(results=[]), {"role": "user", "content": "never mind"}]},
        'messages[1].tool_calls: no tool turn answers "call_1" (each call needs one, '
        "right after the assistant turn)",
    ),
    (
        {"messages": loop(call("a"), call("b"), results=[("a", "r")])},
        'messages[1].tool_calls: no tool turn answers "b"',
    ),
    (
        {
            "messages": [
                *loop(),
                {"role": "assistant", "content": "ok"},
                {"role": "tool", "tool_call_id": "call_1", "content": "late"},
            ]
        },
        'messages[4].tool_call_id: call "call_1" is answered twice',
    ),
    (
        {
            "messages": [
                *loop(call("a"), call("b"), results=[("a", "r"), ("b", "r")]),
                {"role": "assistant", "content": None, "tool_calls": [call("c")]},
                {"role": "tool", "tool_call_id": "c", "content": "r"},
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": [call("d")]},
                {"role": "tool", "tool_call_id": "a", "content": "r"},
            ]
        },
        'messages[8].tool_call_id: call "a" is answered twice',
    ),
    (
        {"messages": loop(call("a"), call("a"))},
        'messages[1].tool_calls[1].id: "a" is used by an earlier call',
    ),
    (
        {"messages": loop(call(args="[1]"))},
        "messages[1].tool_calls[0].function.arguments: must be the JSON text of an object",
    ),
    (
        {"messages": loop(call(args="{"))},
        "messages[1].tool_calls[0].function.arguments: must be the JSON text of an object",
    ),
    (
        {"messages": loop(call(args='{"a":NaN}'))},
        "messages[1].tool_calls[0].function.arguments: must be the JSON text of an object",
    ),
    (
        {"messages": loop(call(args='{"a":1,"a":2}'))},
        "messages[1].tool_calls[0].function.arguments: must be the JSON text of an object",
    ),
    (
        {
            "messages": loop(
                {"id": "a", "type": "function", "function": {"name": "x", "arguments": {}}}
            )
        },
        "messages[1].tool_calls[0].function.arguments: Input should be a valid string",
    ),
    (
        {
            "messages": loop(
                {"id": "a", "type": "code", "function": {"name": "x", "arguments": "{}"}}
            )
        },
        "messages[1].tool_calls[0].type",
    ),
    (
        {
            "messages": loop(
                {"id": "a b", "type": "function", "function": {"name": "x", "arguments": "{}"}}
            )
        },
        "messages[1].tool_calls[0].id: String should match pattern",
    ),
    (
        {
            "messages": loop(
                {"id": "", "type": "function", "function": {"name": "x", "arguments": "{}"}}
            )
        },
        "messages[1].tool_calls[0].id: String should match pattern",
    ),
    (
        {
            "messages": loop(
                {"id": "a", "type": "function", "function": {"name": "x y", "arguments": "{}"}}
            )
        },
        "messages[1].tool_calls[0].function.name: String should match pattern",
    ),
    (
        {
            "messages": loop(
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "x", "arguments": "{}", "extra": 1},
                }
            )
        },
        "messages[1].tool_calls[0].function.extra: unknown field",
    ),
    (
        {"messages": [*loop()[:2], {"role": "tool", "tool_call_id": "call_1", "content": None}]},
        "messages[2].content: required",
    ),
    (
        {
            "messages": [
                *loop()[:2],
                {"role": "tool", "tool_call_id": "call_1", "content": "r", "name": "set_alarm"},
            ]
        },
        "messages[2].name: unknown field",
    ),
    (
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": None, "tool_calls": [call()]},
                {"role": "tool", "tool_call_id": "call_1", "content": "r"},
            ]
        },
        "messages: at least one turn must have role 'user'",
    ),
]


@pytest.mark.parametrize("body,message", REFUSED, ids=[m[:70] for _, m in REFUSED])
def test_malformed_tool_fields_are_bad_requests_naming_the_path(
    body: dict[str, Any], message: str
) -> None:
    assert refused(body).startswith(message)


# --- limits -----------------------------------------------------------------------------------


def tool_named(i: int) -> dict[str, Any]:
    return {"type": "function", "function": {"name": f"t{i}"}}


def test_the_number_of_tools_is_limited_early() -> None:
    cfg = Config(device_id="dev1", ingress={"max_tools": 3})
    ok({"prompt": "x", "tools": [tool_named(i) for i in range(3)]}, cfg)
    # checked before the fields: a fourth broken tool is not what the client hears about
    tools = [tool_named(i) for i in range(3)] + [{"junk": 1}]
    assert (
        refused({"prompt": "x", "tools": tools}, cfg) == "tools: 4 tools; at most 3 in one request"
    )
    assert CFG.ingress.max_tools == 32


def test_schema_bytes_are_limited_early() -> None:
    cfg = Config(device_id="dev1", ingress={"max_schema_bytes": 256})
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20)}}
    tools = [TIME, {"type": "function", "function": {"name": "big", "parameters": big}}]
    msg = refused({"prompt": "x", "tools": tools}, cfg)
    assert msg.startswith("tools[1].function.parameters: the schema is ")
    assert msg.endswith("bytes of JSON; at most 256")
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": big}}
    msg = refused({"prompt": "x", "response_format": fmt}, cfg)
    assert msg.startswith("response_format.json_schema.schema: the schema is ")
    assert CFG.ingress.max_schema_bytes == 8192


def test_tool_result_bytes_are_limited_together() -> None:
    cfg = Config(device_id="dev1", ingress={"max_tool_result_bytes": 300})
    msgs = loop(call("a"), call("b"), results=[("a", "é" * 100), ("b", "x" * 100)])  # 200 + 100
    ok({"messages": msgs}, cfg)
    msgs = loop(call("a"), call("b"), results=[("a", "é" * 100), ("b", "x" * 101)])
    assert refused({"messages": msgs}, cfg) == (
        "messages: the tool results are 301 bytes together; at most 300"
    )
    assert CFG.ingress.max_tool_result_bytes == 32768


# --- the result -------------------------------------------------------------------------------


def result(calls: tuple[ToolCall, ...] = ()) -> Result:
    return Result(
        id="r1",
        text="",
        finish_reason="tool_calls" if calls else "stop",
        route=RouteDecision("local", ("no_cloud",)),
        usage=Usage(10, 12),
        timing=Timing(0.1, None, 50.0),
        energy=EnergyReport(None, None, None, None, "null", False, None, "no power source"),
        guardian=None,
        tool_calls=calls,
    )


def test_the_result_carries_tool_calls_in_the_openai_shape() -> None:
    calls = (
        ToolCall("call_1", "set_alarm", '{"hour":6,"minute":30}'),
        ToolCall("c2", "get_time", "{}"),
    )
    body = json.loads(wire.encode_result(result(calls)))
    assert body["finish_reason"] == "tool_calls"
    assert body["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "set_alarm", "arguments": '{"hour":6,"minute":30}'},
        },
        {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert json.loads(wire.encode_result(result()))["tool_calls"] == []


def test_a_result_call_sent_back_as_history_is_accepted() -> None:
    """What edged sends is what edged takes back: the loop closes without reshaping."""
    calls = (ToolCall("call_9", "set_alarm", '{"hour":6,"minute":30}'),)
    body = json.loads(wire.encode_result(result(calls)))
    msgs = [
        {"role": "user", "content": "Wake me at 6:30."},
        {"role": "assistant", "content": body["text"] or None, "tool_calls": body["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_9", "content": '{"ok":true}'},
    ]
    req = ok({"messages": msgs, "tools": [ALARM]})
    assert req.messages[1].tool_calls == calls


# --- the journal ------------------------------------------------------------------------------


def test_the_journal_keeps_tools_and_tool_turns_across_a_restart(tmp_path: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "alarm", "schema": ALARM_PARAMS}}
    for body in (
        {"messages": loop(), "tools": [ALARM, TIME], "tool_choice": "required"},
        {
            "prompt": "x",
            "tools": [ALARM],
            "tool_choice": {"type": "function", "function": {"name": "set_alarm"}},
        },
        {"prompt": "x", "response_format": fmt},
        {"prompt": "x", "response_format": {"type": "json_object"}, "tools": [TIME]},
        {"prompt": "plain"},
    ):
        req = ok({"id": "j1", **body})
        rec = json.loads(json.dumps(request_record(req, 100.0, 1e6)))
        back = request_from_record(rec, 100.0, 1e6)
        assert back == req
        j = Journal(tmp_path / "j")
        j.load()
        j.admit(request_record(req, 100.0, 1e6))
        (entry,) = Journal(tmp_path / "j").load()
        assert entry.request(100.0, 1e6) == req
        j.done("j1")


def test_old_journal_records_without_the_tool_fields_still_load() -> None:
    old = {
        "op": "admit",
        "id": "old1",
        "reply": {"topic": "reply/x", "correlation_b64": None},
        "messages": [["system", "be brief"], ["user", "hi"]],
        "max_tokens": 7,
        "temperature": 0.2,
        "stream": False,
        "route": "local",
        "sensitivity": "normal",
        "policy": None,
        "received_unix_s": 1e6,
        "deadline_unix_s": None,
    }
    req = request_from_record(old, 100.0, 1e6)
    assert req.tools == () and req.tool_choice is None and req.response_format is None
    assert req.messages == (ChatMessage("system", "be brief"), ChatMessage("user", "hi"))
    # and a plain request's record is what it was: no new keys
    assert set(request_record(req, 100.0, 1e6)) == set(old)
    assert request_record(req, 100.0, 1e6)["messages"] == old["messages"]


@pytest.mark.parametrize(
    "change",
    [
        {"tools": [{"name": "a"}]},
        {"tools": [{"name": "a", "description": "", "parameters": {}}]},  # choice missing
        {"tool_choice": {"mode": "auto", "name": None}},  # choice without tools
        {"messages": [["user", "hi", {"tool_calls": [["a", "b"]]}]]},
        {"messages": [["robot", "hi"]]},
        {"messages": [["user", "hi", {}, {}]]},
        {"response_format": {"type": "yaml"}},
    ],
)
def test_a_journal_record_of_the_wrong_shape_is_refused_not_half_restored(
    change: dict[str, Any],
) -> None:
    rec = request_record(ok({"id": "j2", "prompt": "x"}), 100.0, 1e6)
    with pytest.raises((KeyError, TypeError, ValueError)):
        request_from_record({**copy.deepcopy(rec), **change}, 100.0, 1e6)


# --- generated conversations ------------------------------------------------------------------

ids = st.text(alphabet="abc_-9", min_size=1, max_size=4)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Turns of every kind, in an order that is often wrong: stray tool turns, repeated or
    unknown ids, unanswered calls, null contents."""
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["user", "assistant", "calls", "tool", "system"]))
        if kind == "calls":
            calls = draw(st.lists(ids, min_size=0, max_size=3))
            content = draw(st.one_of(st.none(), st.text(max_size=5)))
            args = draw(st.sampled_from(["{}", '{"hour":1}', "[]", "{", '"x"']))
            out.append(
                {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": [call(i, "set_alarm", args) for i in calls],
                }
            )
        elif kind == "tool":
            out.append(
                {"role": "tool", "tool_call_id": draw(ids), "content": draw(st.text(max_size=5))}
            )
        else:
            out.append({"role": kind, "content": draw(st.one_of(st.none(), st.text(max_size=5)))})
    return out


@settings(max_examples=1500, deadline=None)
@given(conversations(), st.one_of(st.none(), st.sampled_from(["auto", "none", "required", "x"])))
def test_generated_conversations_are_served_or_refused_never_crash(
    msgs: list[dict[str, Any]], choice: str | None
) -> None:
    body: dict[str, Any] = {"id": "g1", "messages": msgs, "tools": [ALARM]}
    if choice is not None:
        body["tool_choice"] = choice
    r = parse(body)
    if isinstance(r, wire.Rejection):
        assert r.error.code in WIRE_CODES and r.error.message
        return
    # what was served keeps the OpenAI rules: every call answered once, right after its turn
    assert r.messages[-1].role in ("user", "tool")
    owed: set[str] = set()
    for m in r.messages:
        if m.role == "tool":
            assert m.tool_call_id in owed
            owed.discard(m.tool_call_id)
        else:
            assert not owed
            owed = {c.id for c in m.tool_calls}
            assert len(owed) == len(m.tool_calls)
    assert not owed
