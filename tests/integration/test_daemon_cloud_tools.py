"""Tool calls from a remote backend, through the real daemon: the scripted OpenAI-compatible
server (tests.scripted_cloud) streams calls in fragments, and what reaches the client over
MQTT is one whole, validated call, or ``tool_call_invalid`` and nothing of the call.

The local backend is the fake one (no model): every request here asks for the cloud.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import Broker, Client, Daemon
from tests.scripted_cloud import (
    Call,
    ScriptedCloud,
    call_fragments,
    chunk,
    cloud_env,
    finish,
    stream,
    text,
)

pytestmark = pytest.mark.integration

ALARM = {
    "type": "function",
    "function": {
        "name": "set_alarm",
        "description": "Set an alarm",
        "parameters": {
            "type": "object",
            "properties": {
                "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                "minute": {"type": "integer", "minimum": 0, "maximum": 59},
            },
            "required": ["hour", "minute"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon], cloud: ScriptedCloud) -> Daemon:
    cloud.clear()
    return make_daemon(
        **cloud_env(
            cloud,
            EDGED_CLOUD__READ_TIMEOUT_S="10",
        ),
    )


def ask(broker: Broker, d: Daemon, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The final reply and the texts of the chunks before it (exactly one final, last)."""
    rid = uuid.uuid4().hex[:10]
    with Client(broker.port) as c:
        c.subscribe("reply/ct")
        request = {"id": rid, "route": "cloud", "max_tokens": 64, **body}
        c.publish(f"edged/{d.device_id}/request", json.dumps(request), response_topic="reply/ct")
        msgs = [m.json() for m in c.collect(rid, timeout_s=30)]
    finals = [m for m in msgs if m["type"] in ("result", "error")]
    assert len(finals) == 1 and msgs[-1] is finals[0], msgs
    return finals[0], [m["text"] for m in msgs if m["type"] == "chunk"]


def test_a_call_streamed_byte_by_byte_reaches_the_client_whole(
    broker: Broker, daemon: Daemon, cloud: ScriptedCloud
) -> None:
    args = '{"hour": 6, "minute": 30}'
    cloud.script(
        stream(
            text("Setting ", "it."),
            call_fragments([Call("set_alarm", args, id="call_abc")], size=1),
            finish("tool_calls", usage={"prompt_tokens": 40, "completion_tokens": 15}),
        )
    )
    final, chunks = ask(broker, daemon, {"prompt": "wake me at 6:30", "tools": [ALARM]})
    assert final["type"] == "result", final
    assert final["finish_reason"] == "tool_calls"
    assert final["route"]["backend"] == "cloud"
    assert final["tool_calls"] == [
        {"id": "call_abc", "type": "function", "function": {"name": "set_alarm", "arguments": args}}
    ]
    assert "".join(chunks) == "Setting it." == final["text"], "text streams; the call never does"
    # what edged sent: the tools and the choice in the OpenAI shape
    sent = cloud.last
    assert sent["tools"] == [ALARM] and sent["tool_choice"] == "auto" and sent["stream"] is True


@pytest.mark.parametrize(
    ("call", "why"),
    [
        (Call("set_alarm", '{"hour": 24, "minute": 0}', id="c1"), "hour"),
        (Call("open_door", "{}", id="c1"), "unknown tool 'open_door'"),
        (Call("set_alarm", '{"hour": 6, "minute": 3', id="c1"), "not valid JSON"),
    ],
)
def test_an_invalid_remote_call_is_never_released(
    broker: Broker, daemon: Daemon, cloud: ScriptedCloud, call: Call, why: str
) -> None:
    cloud.script(stream(call_fragments([call], size=3), finish("tool_calls")))
    final, chunks = ask(broker, daemon, {"prompt": "wake me", "tools": [ALARM]})
    assert final["type"] == "error" and final["code"] == "tool_call_invalid", final
    assert why in final["message"]
    assert chunks == []
    assert call.arguments not in json.dumps(final)


def test_the_follow_up_turn_carries_the_call_and_the_result_to_the_cloud(
    broker: Broker, daemon: Daemon, cloud: ScriptedCloud
) -> None:
    cloud.script(stream([chunk({"content": "Your alarm is set for 6:30."})], finish("stop")))
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "set_alarm", "arguments": '{"hour": 6, "minute": 30}'},
    }
    messages = [
        {"role": "user", "content": "wake me at 6:30"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"ok": true}'},
    ]
    final, chunks = ask(broker, daemon, {"messages": messages, "tools": [ALARM]})
    assert final["type"] == "result" and final["finish_reason"] == "stop", final
    assert final["tool_calls"] == [] and "".join(chunks) == final["text"]
    sent = cloud.last["messages"]
    assert sent[-2] == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_abc", "content": '{"ok": true}'}


def test_a_structured_answer_that_breaks_its_schema_is_an_error(
    broker: Broker, daemon: Daemon, cloud: ScriptedCloud
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema}}
    cloud.script(
        stream([chunk({"content": '{"n": 3}'})], finish("stop")),
        stream([chunk({"content": '{"n": "three"}'})], finish("stop")),
    )
    ok, _ = ask(broker, daemon, {"prompt": "count", "response_format": fmt, "stream": False})
    assert ok["type"] == "result" and json.loads(ok["text"]) == {"n": 3}, ok
    assert cloud.last["response_format"]["type"] == "json_schema"
    bad, chunks = ask(broker, daemon, {"prompt": "count", "response_format": fmt, "stream": False})
    assert bad["type"] == "error" and bad["code"] == "tool_call_invalid", bad
    assert "n" in bad["message"] and chunks == []
