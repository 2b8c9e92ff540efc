"""``device_tools`` on the wire (issue 15 B): named device tools are offered to the model
beside the client's tools; unknown names are bad_request; the journal keeps them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from edged.config import Config
from edged.ingress import wire
from edged.ingress.journal import request_from_record, request_record
from edged.types import AgentStep, Request, ToolChoice

LIGHT = {
    "description": "Switch a room's light on or off.",
    "parameters": {
        "type": "object",
        "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
        "required": ["room", "on"],
    },
    "topic": "home/{room}/light/set",
    "reply_topic": "home/{room}/light/state",
}
CFG = Config(
    device_id="dev1",
    agent={"tool_topic_prefixes": ["home/"]},
    tools={"light_set": LIGHT, "door_lock": {"topic": "home/door/lock"}},
)
LIGHTS = {"device_tools": ["light_set"]}
ALARM = {"type": "function", "function": {"name": "set_alarm"}}


def parse(body: Any, cfg: Config = CFG) -> Request | wire.Rejection:
    return wire.parse_request(
        json.dumps({"id": "t1", "prompt": "lights", **body}).encode(),
        cfg=cfg,
        default_reply_topic=lambda rid: f"edged/dev1/response/{rid}",
        response_topic=None,
        correlation_data=None,
        received_at_s=100.0,
    )


def test_device_tools_are_offered_beside_client_tools() -> None:
    r = parse({"tools": [ALARM], "device_tools": ["light_set"]})
    assert isinstance(r, Request), r
    assert [t.name for t in r.tools] == ["set_alarm", "light_set"]
    assert r.device_tools == ("light_set",)
    light = r.tools[1]
    assert light.description == LIGHT["description"] and light.parameters == LIGHT["parameters"]
    assert r.tool_choice == ToolChoice("auto")


def test_device_tools_alone_default_to_auto_and_may_be_named_by_tool_choice() -> None:
    r = parse({"device_tools": ["door_lock"], "tool_choice": "required"})
    assert isinstance(r, Request), r
    assert r.tools[0].parameters == {"type": "object", "properties": {}}
    assert r.tool_choice == ToolChoice("required")
    r = parse({"device_tools": ["light_set"]})
    assert isinstance(r, Request) and r.tool_choice == ToolChoice("auto")


def test_no_device_tools_by_default() -> None:
    r = parse({"device_tools": None})
    assert isinstance(r, Request) and r.device_tools == () and r.tools == ()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"device_tools": ["unlock_door"]}, '[0]: "unlock_door" is not a device tool'),
        ({"device_tools": ["light_set", "light_set"]}, "[1]: 'light_set' is named twice"),
        (
            {"tools": [{"type": "function", "function": {"name": "light_set"}}], **LIGHTS},
            "also a client tool",
        ),
        ({"device_tools": "light_set"}, "device_tools"),
        ({"device_tools": [3]}, "device_tools"),
    ],
)
def test_bad_device_tools_are_bad_requests(body: dict[str, Any], words: str) -> None:
    r = parse(body)
    assert isinstance(r, wire.Rejection), r
    assert r.error.code == "bad_request" and r.reply is not None
    assert words in r.error.message, r.error.message


def test_a_device_with_no_tools_refuses_any() -> None:
    r = parse({"device_tools": ["light_set"]}, Config(device_id="dev1"))
    assert isinstance(r, wire.Rejection) and "is not a device tool" in r.error.message


def test_device_tools_count_against_max_tools() -> None:
    cfg = CFG.model_copy(update={"ingress": CFG.ingress.model_copy(update={"max_tools": 1})})
    r = parse({"tools": [ALARM], "device_tools": ["light_set"]}, cfg)
    assert isinstance(r, wire.Rejection) and "at most 1" in r.error.message


def test_the_journal_keeps_device_tools() -> None:
    r = parse({"device_tools": ["light_set"]})
    assert isinstance(r, Request)
    record = json.loads(json.dumps(request_record(r, 100.0, 1000.0)))
    back = request_from_record(record, 100.0, 1000.0)
    assert back.device_tools == ("light_set",) and back.tools == r.tools


def test_a_result_with_steps_encodes_them_and_validates() -> None:
    from tests.unit.test_schemas import MEASURED, TIMINGS, _result, assert_valid

    base = _result(MEASURED, None, TIMINGS[0])
    body = json.loads(wire.encode_result(base))
    assert "steps" not in body  # no device-tool call: the key is left out
    steps = (
        AgentStep("light_set", "allow", (), 12.34567, "ok"),
        AgentStep("unlock_door", "block", ("door.never",), None, "not_run"),
        AgentStep("light_set", "allow", ("light.ok",), 3000.1, "timeout"),
    )
    body = json.loads(wire.encode_result(dataclasses.replace(base, steps=steps)))
    assert body["steps"][0] == {
        "tool": "light_set",
        "decision": "allow",
        "rules": [],
        "latency_ms": 12.346,
        "outcome": "ok",
    }
    assert body["steps"][1]["rules"] == ["door.never"] and body["steps"][1]["latency_ms"] is None
    assert_valid("result", body)
