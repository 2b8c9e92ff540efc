"""The JSON Schemas in docs/schemas/ (and docs/protocol.md) stay true to the wire code.

Every message checked here is produced by the real encoders, parser and status builder;
nothing needs the broker or the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import typing
from functools import cache
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from edged import __version__
from edged.config import Config, IngressConfig
from edged.energy.meter import NullMeter
from edged.errors import WIRE_CODES, EdgedError
from edged.guardian import PassGuardian
from edged.ingress import wire
from edged.mqtt.topics import Topics
from edged.telemetry.presence import status_payload
from edged.tools import schema as tool_schema
from edged.types import (
    EnergyReport,
    FinishReason,
    GuardianReport,
    Request,
    Result,
    RouteDecision,
    Timing,
    ToolCall,
    Usage,
)
from tests.helpers import ROOT

SCHEMAS = ROOT / "docs" / "schemas"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
SCHEMA_NAMES = ("request", "chunk", "result", "error", "status")
CFG = Config(device_id="dev1")


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def schema(name: str) -> dict[str, Any]:
    return dict(validator(name).schema)


def protocol_text() -> str:
    """docs/protocol.md with every run of whitespace (line breaks too) as one space."""
    return " ".join(PROTOCOL_MD.read_text(encoding="utf-8").split())


def assert_valid(name: str, instance: Any) -> None:
    errors = [e.message for e in validator(name).iter_errors(instance)]
    assert not errors, (name, instance, errors)


def is_valid(name: str, instance: Any) -> bool:
    return bool(validator(name).is_valid(instance))


def parse(
    body: dict[str, Any] | None,
    *,
    raw: bytes | None = None,
    response_topic: str | None = None,
    corr: bytes | None = None,
) -> Request | wire.Rejection:
    return wire.parse_request(
        raw if raw is not None else json.dumps(body).encode(),
        cfg=CFG,
        default_reply_topic=Topics(CFG.mqtt.topic_prefix, CFG.device_id).response,
        response_topic=response_topic,
        correlation_data=corr,
        received_at_s=100.0,
    )


# --- the schemas themselves ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12_and_its_examples_validate(name: str) -> None:
    s = schema(name)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(s)
    assert s.get("additionalProperties") is False
    for example in s.get("examples", []):
        assert_valid(name, example)


# --- (a) the request schema matches RequestBody --------------------------------------------------


def test_request_schema_properties_are_the_request_body_fields() -> None:
    assert set(schema("request")["properties"]) == set(wire.RequestBody.model_fields)


def test_request_schema_message_items_match_the_message_model() -> None:
    items = schema("request")["properties"]["messages"]["items"]
    # messages: list[_Message] | None
    message_list, _ = typing.get_args(wire.RequestBody.model_fields["messages"].annotation)
    (message_model,) = typing.get_args(message_list)
    assert set(items["properties"]) == set(message_model.model_fields)
    required = {n for n, f in message_model.model_fields.items() if f.is_required()}
    assert set(items["required"]) == required == {"role"}
    role = message_model.model_fields["role"].annotation
    assert items["properties"]["role"]["enum"] == list(typing.get_args(role))


def test_request_schema_defaults_enums_and_limits_match_the_code() -> None:
    props = schema("request")["properties"]
    fields = wire.RequestBody.model_fields
    for name, prop in props.items():
        if "default" in prop:
            assert prop["default"] == fields[name].default, name
        if "enum" in prop:
            assert prop["enum"] == list(typing.get_args(fields[name].annotation)), name
    # (?!\n): Python's re (used by jsonschema) lets $ match before a final newline.
    assert props["id"]["pattern"] == f"^{wire.ID_RE.pattern}$(?!\\n)"
    assert props["deadline_ms"]["maximum"] == wire.MAX_DEADLINE_MS


def test_the_request_schemas_subset_is_the_checkers_subset() -> None:
    """docs/schemas/request.schema.json's subsetSchema names exactly the keywords, types and
    limits of edged/tools/schema.py, and the limits the description quotes are the
    defaults."""
    defs = schema("request")["$defs"]
    subset = defs["subsetSchema"]["properties"]
    assert set(subset) == set(tool_schema.KEYWORDS | tool_schema.ANNOTATIONS)
    assert defs["typeName"]["enum"] == list(tool_schema.TYPES)
    assert subset["enum"]["maxItems"] == tool_schema.MAX_ENUM_VALUES
    assert subset["properties"]["maxProperties"] == tool_schema.MAX_PROPERTIES
    assert subset["anyOf"]["maxItems"] == tool_schema.MAX_ANY_OF
    described = defs["subsetSchema"]["description"]
    assert f"deeper than {tool_schema.MAX_SCHEMA_DEPTH} schemas" in described
    ingress = CFG.ingress
    text = schema("request")["description"]
    assert f"ingress.max_tools, default {ingress.max_tools})" in text
    assert f"ingress.max_schema_bytes, default {ingress.max_schema_bytes} bytes" in text
    assert f"ingress.max_tool_result_bytes, default {ingress.max_tool_result_bytes})" in text
    tools = schema("request")["properties"]["tools"]
    assert tools["maxItems"] == IngressConfig.model_fields["max_tools"].metadata[-1].le


def test_result_schema_finish_reasons_are_the_types() -> None:
    enum = schema("result")["properties"]["finish_reason"]["enum"]
    assert enum == list(typing.get_args(FinishReason))


def test_error_schema_codes_are_the_wire_codes() -> None:
    assert schema("error")["properties"]["code"]["enum"] == list(WIRE_CODES)


def test_protocol_doc_names_every_request_field_and_error_code() -> None:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    for field in wire.RequestBody.model_fields:
        assert f"`{field}`" in text, field
    for code in WIRE_CODES:
        assert f"`{code}`" in text, code


# --- (b) what the encoders produce validates ------------------------------------------------------


def test_encoded_chunks_validate() -> None:
    for seq, text in enumerate(["The capital", " of France", "", "é 🦊"]):
        assert_valid("chunk", json.loads(wire.encode_chunk("kitchen-42", seq, text)))
    assert not is_valid("chunk", {"id": "a", "type": "chunk", "seq": -1, "text": "x"})
    assert not is_valid("chunk", {"id": "a", "type": "chunk", "seq": 0, "text": "x", "more": 1})


def _error_classes() -> dict[str, type[EdgedError]]:
    found: dict[str, type[EdgedError]] = {}
    todo = list(EdgedError.__subclasses__())
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)  # the top class of each code
        todo.extend(cls.__subclasses__())
    return found


def test_every_wire_code_has_an_error_class() -> None:
    assert set(_error_classes()) == set(WIRE_CODES)


@pytest.mark.parametrize("code", WIRE_CODES)
@pytest.mark.parametrize("request_id", ["kitchen-42", None])
def test_encoded_errors_validate(code: str, request_id: str | None) -> None:
    err = _error_classes()[code](f"something about {code}")
    body = json.loads(wire.encode_error(request_id, err))
    assert body["code"] == code
    assert_valid("error", body)


def _result(energy: EnergyReport, guardian: GuardianReport | None, timing: Timing) -> Result:
    return Result(
        id="kitchen-42",
        text="The capital of France is Paris.",
        finish_reason="stop",
        route=RouteDecision("local", ("no_cloud",)),
        usage=Usage(prompt_tokens=31, completion_tokens=8),
        timing=timing,
        energy=energy,
        guardian=guardian,
    )


MEASURED = EnergyReport(
    joules=1.25,
    joules_active=0.5,
    tokens_per_joule=6.4,
    mwh_per_1k_tokens=43.4,
    source="ina3221",
    estimated=True,
    sample_hz=100.0,
)
TIMINGS = [Timing(0.4123, 38.90512, 121.3), Timing(None, None, 0.5)]


@pytest.mark.parametrize("timing", TIMINGS)
def test_encoded_results_validate(timing: Timing) -> None:
    unknown = NullMeter().end("kitchen-42", 8)  # what edged reports today
    assert unknown.joules is None and unknown.reason
    request = parse({"id": "kitchen-42", "prompt": "hi"})
    assert isinstance(request, Request)
    guard = PassGuardian()
    no_rules = guard.report(asyncio.run(guard.check_input(request)))  # what edged reports today
    assert no_rules is None
    for energy in (unknown, MEASURED):
        for guardian in (no_rules, GuardianReport({"pii.email": 2}, {}), GuardianReport()):
            body = json.loads(wire.encode_result(_result(energy, guardian, timing)))
            assert_valid("result", body)


def test_encoded_results_with_tool_calls_validate() -> None:
    calls = (
        ToolCall("call_1", "set_alarm", '{"hour":6,"minute":30}'),
        ToolCall("c2", "get_time", "{}"),
    )
    base = _result(MEASURED, GuardianReport(), TIMINGS[1])
    for n in (1, 2):
        r = dataclasses.replace(base, text="", finish_reason="tool_calls", tool_calls=calls[:n])
        body = json.loads(wire.encode_result(r))
        assert len(body["tool_calls"]) == n
        assert_valid("result", body)
    body["tool_calls"][0]["function"]["arguments"] = {"hour": 6}
    assert not is_valid("result", body)


def test_result_schema_rejects_a_missing_or_extra_field() -> None:
    body = json.loads(wire.encode_result(_result(MEASURED, None, TIMINGS[0])))
    del body["guardian"]
    assert not is_valid("result", body)
    body = json.loads(wire.encode_result(_result(MEASURED, None, TIMINGS[0])))
    body["energy"]["watts"] = 3.0
    assert not is_valid("result", body)
    body = json.loads(wire.encode_result(_result(MEASURED, None, TIMINGS[0])))
    del body["tool_calls"]
    assert not is_valid("result", body)


# --- (c) the status messages validate -------------------------------------------------------------


def test_online_status_validates() -> None:
    body = json.loads(
        status_payload(
            CFG,
            "online",
            version=__version__,
            model="smollm2-135m-instruct",
            started_unix_s=1767225598.001,
            pid=os.getpid(),
            request_topic=Topics(CFG.mqtt.topic_prefix, CFG.device_id).request,
        )
    )
    assert_valid("status", body)
    del body["pid"]
    assert not is_valid("status", body)


@pytest.mark.parametrize("reason", ["shutdown", "connection_lost"])
def test_offline_status_validates(reason: str) -> None:
    body = json.loads(status_payload(CFG, "offline", reason=reason))
    assert_valid("status", body)
    assert not is_valid("status", {**body, "pid": 1})
    assert not is_valid("status", {k: v for k, v in body.items() if k != "reason"})


# --- (d) the schema and the parser agree on requests ----------------------------------------------

ALARM: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "set_alarm",
        "description": "Set an alarm.",
        "parameters": {
            "type": "object",
            "properties": {
                "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                "label": {"type": ["string", "null"], "maxLength": 24},
                "days": {"type": "array", "items": {"enum": ["mon", "tue"]}, "maxItems": 2},
                "kind": {"anyOf": [{"const": "once"}, {"type": "boolean"}]},
            },
            "required": ["hour"],
            "additionalProperties": False,
        },
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "set_alarm", "arguments": "{}"}}
LOOP: list[dict[str, Any]] = [
    {"role": "user", "content": "Wake me at 6."},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
]


def _with_params(params: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "t", "parameters": params}}


VALID_REQUESTS: list[dict[str, Any]] = [
    {"prompt": "What is the capital of France?"},
    {"id": "kitchen-42", "prompt": "hi", "max_tokens": 64, "temperature": 0},
    {"id": None, "prompt": "hi", "max_tokens": None, "deadline_ms": None, "reply_to": None},
    {
        "id": "a.b:c_d-1",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Name three colours."},
            {"role": "assistant", "content": "Red, green, blue."},
            {"role": "user", "content": ""},
        ],
        "max_tokens": CFG.ingress.max_tokens_limit,
        "temperature": 2.0,
        "stream": False,
        "route": "local",
        "sensitivity": "private",
        "deadline_ms": wire.MAX_DEADLINE_MS,
        "reply_to": "reply/kitchen-panel",
    },
    {"prompt": None, "messages": [{"role": "user", "content": "hi"}], "route": "cloud"},
    {"prompt": "hi", "reply_to": "edged/dev1/response/kitchen-42"},
    {"prompt": "hi", "tools": [ALARM, {"type": "function", "function": {"name": "get_time"}}]},
    {"prompt": "hi", "tools": [ALARM], "tool_choice": "required"},
    {"prompt": "hi", "tools": [ALARM], "tool_choice": "none"},
    {"prompt": "hi", "tools": [ALARM], "tool_choice": None, "response_format": None},
    {
        "prompt": "hi",
        "tools": [ALARM],
        "tool_choice": {"type": "function", "function": {"name": "set_alarm"}},
    },
    {"prompt": "hi", "tools": None, "response_format": {"type": "text"}},
    {"prompt": "hi", "response_format": {"type": "json_object"}},
    {
        "prompt": "hi",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": ALARM["function"]["parameters"], "strict": True},
        },
    },
    {"messages": LOOP, "tools": [ALARM]},
    {
        "messages": [
            *LOOP,
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "x"},
        ]
    },
]

INVALID_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("unknown field", {"prompt": "hi", "colour": "red"}),
    ("unknown message field", {"messages": [{"role": "user", "content": "x", "name": "n"}]}),
    ("bool as integer", {"prompt": "hi", "max_tokens": True}),
    ("string as integer", {"prompt": "hi", "max_tokens": "5"}),
    ("string as number", {"prompt": "hi", "temperature": "0.5"}),
    ("bool as number", {"prompt": "hi", "temperature": True}),
    ("null temperature", {"prompt": "hi", "temperature": None}),
    ("string as boolean", {"prompt": "hi", "stream": "yes"}),
    ("number as prompt", {"prompt": 42}),
    ("both prompt and messages", {"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}),
    ("neither prompt nor messages", {"max_tokens": 5}),
    ("whitespace prompt", {"prompt": " \t\n"}),
    ("empty messages", {"messages": []}),
    ("bad role", {"messages": [{"role": "robot", "content": "x"}]}),
    ("missing content", {"messages": [{"role": "user"}]}),
    ("max_tokens zero", {"prompt": "hi", "max_tokens": 0}),
    ("temperature too high", {"prompt": "hi", "temperature": 2.5}),
    ("bad route", {"prompt": "hi", "route": "Moon!"}),
    ("bad sensitivity", {"prompt": "hi", "sensitivity": "secret"}),
    ("deadline zero", {"prompt": "hi", "deadline_ms": 0}),
    ("deadline too long", {"prompt": "hi", "deadline_ms": wire.MAX_DEADLINE_MS + 1}),
    ("bad id", {"id": "a/b", "prompt": "hi"}),
    ("empty id", {"id": "", "prompt": "hi"}),
    ("id too long", {"id": "x" * 129, "prompt": "hi"}),
    ("number as id", {"id": 5, "prompt": "hi"}),
    ("id with trailing newline", {"id": "kitchen-42\n", "prompt": "hi"}),
    ("wildcard reply_to", {"prompt": "hi", "reply_to": "reply/+/x"}),
    ("control character in reply_to", {"prompt": "hi", "reply_to": "reply/\x01"}),
    ("DEL in reply_to", {"prompt": "hi", "reply_to": "reply/\x7f"}),
    ("C1 control character in reply_to", {"prompt": "hi", "reply_to": "reply/a\x85b"}),
    ("empty reply_to", {"prompt": "hi", "reply_to": ""}),
    ("number as reply_to", {"prompt": "hi", "reply_to": 5}),
    ("empty tools", {"prompt": "hi", "tools": []}),
    ("tools not a list", {"prompt": "hi", "tools": {"a": ALARM}}),
    ("tool of another type", {"prompt": "hi", "tools": [{**ALARM, "type": "retrieval"}]}),
    ("tool without function", {"prompt": "hi", "tools": [{"type": "function"}]}),
    ("unknown tool field", {"prompt": "hi", "tools": [{**ALARM, "x": 1}]}),
    (
        "bad tool name",
        {"prompt": "hi", "tools": [{"type": "function", "function": {"name": "a b"}}]},
    ),
    ("unsupported keyword", {"prompt": "hi", "tools": [_with_params({"type": "object", "x": 1})]}),
    (
        "pattern",
        {
            "prompt": "hi",
            "tools": [
                _with_params(
                    {"type": "object", "properties": {"a": {"type": "string", "pattern": "a"}}}
                )
            ],
        },
    ),
    (
        "$ref",
        {
            "prompt": "hi",
            "tools": [_with_params({"type": "object", "properties": {"a": {"$ref": "#"}}})],
        },
    ),
    (
        "parameters not an object schema",
        {"prompt": "hi", "tools": [_with_params({"type": "string"})]},
    ),
    (
        "boolean subschema",
        {"prompt": "hi", "tools": [_with_params({"type": "object", "properties": {"a": True}})]},
    ),
    (
        "schema additionalProperties",
        {"prompt": "hi", "tools": [_with_params({"type": "object", "additionalProperties": {}})]},
    ),
    (
        "unknown type name",
        {
            "prompt": "hi",
            "tools": [_with_params({"type": "object", "properties": {"a": {"type": "int"}}})],
        },
    ),
    (
        "empty enum",
        {
            "prompt": "hi",
            "tools": [_with_params({"type": "object", "properties": {"a": {"enum": []}}})],
        },
    ),
    ("bad tool_choice", {"prompt": "hi", "tools": [ALARM], "tool_choice": "any"}),
    (
        "tool_choice of another type",
        {
            "prompt": "hi",
            "tools": [ALARM],
            "tool_choice": {"type": "tool", "function": {"name": "set_alarm"}},
        },
    ),
    ("bad response_format", {"prompt": "hi", "response_format": {"type": "xml"}}),
    (
        "json_schema without schema",
        {"prompt": "hi", "response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
    ),
    (
        "json_schema with format",
        {
            "prompt": "hi",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"type": "string", "format": "date"}},
            },
        },
    ),
    (
        "tool role without tool_call_id",
        {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]},
    ),
    (
        "tool_call_id on a user turn",
        {"messages": [{"role": "user", "content": "x", "tool_call_id": "a"}]},
    ),
    (
        "tool_calls on a user turn",
        {"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]},
    ),
    ("null content without tool_calls", {"messages": [{"role": "user", "content": None}]}),
    (
        "null content on a tool turn",
        {"messages": [*LOOP[:2], {"role": "tool", "tool_call_id": "call_1", "content": None}]},
    ),
    (
        "empty tool_calls",
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "user", "content": "y"},
            ]
        },
    ),
    (
        "call with object arguments",
        {
            "messages": [
                LOOP[0],
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "a", "arguments": {}}}],
                },
                LOOP[2],
            ]
        },
    ),
    (
        "call id with a space",
        {
            "messages": [
                LOOP[0],
                {"role": "assistant", "tool_calls": [{**CALL, "id": "a b"}]},
                {**LOOP[2], "tool_call_id": "a b"},
            ]
        },
    ),
]


@pytest.mark.parametrize("body", VALID_REQUESTS)
def test_valid_requests_pass_the_schema_and_the_parser(body: dict[str, Any]) -> None:
    assert_valid("request", body)
    assert isinstance(parse(body), Request)


@pytest.mark.parametrize(
    "body", [b for _, b in INVALID_REQUESTS], ids=[n for n, _ in INVALID_REQUESTS]
)
def test_invalid_requests_fail_the_schema_and_the_parser(body: dict[str, Any]) -> None:
    assert not is_valid("request", body)
    result = parse(body)
    assert isinstance(result, wire.Rejection)
    assert result.error.code == "bad_request"


# --- (e) reply addresses, Correlation Data, strict JSON: the doc and the parser agree -------------


@pytest.mark.parametrize(
    "topic",
    [
        "edged/dev1/request",
        "edged/dev1/status",
        "edged/dev1/response",
        "edged/other/telemetry",
        "edged/other/response/x",
    ],
)
def test_reply_addresses_under_edged_must_be_response_topics(topic: str) -> None:
    result = parse({"id": "t1", "prompt": "hi", "reply_to": topic})
    assert isinstance(result, wire.Rejection) and result.error.code == "bad_request"
    assert "reply_to refused" in result.error.message
    rule = "edged/<device_id>/response/..."
    assert rule in protocol_text()
    assert rule in schema("request")["properties"]["reply_to"]["description"]


def test_protocol_doc_names_the_c1_controls_refused_in_reply_addresses() -> None:
    assert "U+007F to U+009F" in protocol_text()
    assert "U+007F-U+009F" in schema("request")["properties"]["reply_to"]["description"]


def test_correlation_data_is_echoed_whatever_the_reply_address() -> None:
    via_v5 = parse({"prompt": "hi"}, response_topic="reply/app", corr=b"c")
    via_reply_to = parse({"prompt": "hi", "reply_to": "reply/app"}, corr=b"c")
    via_default = parse({"id": "k1", "prompt": "hi"}, corr=b"c")
    refused = parse({"id": "k2", "prompt": "hi", "max_tokens": 0}, corr=b"c")
    no_id = parse(None, raw=b"[]", response_topic="reply/app", corr=b"c")
    for r in (via_v5, via_reply_to, via_default, refused, no_id):
        assert r.reply is not None and r.reply.correlation_data == b"c", r
    assert "every reply (chunks, result, error) carries the request's MQTT v5 Correlation Data" in (
        protocol_text()
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"prompt": "hi", "temperature": NaN}',
        b'{"prompt": "hi", "temperature": Infinity}',
        b'{"prompt": "hi", "temperature": -Infinity}',
        b'{"prompt": "hi", "prompt": "again"}',
        b'{"messages": [{"role": "user", "content": "a", "content": "b"}]}',
        b'{"prompt": "lone \\ud800 surrogate"}',
        b'{"prompt": "lone \\udfff surrogate"}',
    ],
)
def test_non_strict_json_is_a_bad_request_with_a_null_id(raw: bytes) -> None:
    result = parse(None, raw=raw, response_topic="reply/app")
    assert isinstance(result, wire.Rejection)
    assert result.error.code == "bad_request" and result.id is None


def test_protocol_doc_names_the_strict_json_rules() -> None:
    text = protocol_text()
    for rule in ("`NaN`", "`Infinity`", "`-Infinity`", "duplicate keys", "unpaired UTF-16"):
        assert rule in text, rule
    described = schema("request")["description"]
    for rule in ("NaN", "Infinity", "duplicate keys", "unpaired UTF-16 surrogates"):
        assert rule in described, rule
