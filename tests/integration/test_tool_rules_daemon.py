"""Tool rules through the real daemon and the real broker (the fake backend scripts the
calls): a blocked call never reaches the reply topic, an in-bounds one does, confirm marks
it, every decision is audited on events/tool, and SIGHUP reloads the tool rules."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Broker, Client, Daemon

pytestmark = pytest.mark.integration

PACK = """
name = "home"
[[rule]]
id = "door.never"
kind = "tool"
tools = ["unlock_door"]
action = "block"
[[rule]]
id = "thermostat.range"
kind = "tool"
tools = ["set_thermostat"]
action = "allow"
[rule.arguments]
type = "object"
required = ["celsius"]
properties = { celsius = { type = "number", minimum = 16, maximum = 26 } }
[[rule]]
id = "oven.ask"
kind = "tool"
tools = ["oven_on"]
action = "confirm"
"""
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("unlock_door", "set_thermostat", "oven_on", "play_music")
]


def ask(
    d: Daemon, port: int, *calls: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """One request whose turn makes ``calls``: its final reply, and everything published
    meanwhile outside the request topic."""
    rid = uuid.uuid4().hex[:10]
    with Client(port) as tap, Client(port) as app:
        tap.subscribe("#")
        app.subscribe("reply/t")
        app.publish(
            f"edged/{d.device_id}/request",
            json.dumps(
                {
                    "id": rid,
                    "messages": [{"role": "user", "content": json.dumps({"tool_calls": calls})}],
                    "tools": TOOLS,
                    "stream": True,
                }
            ),
            response_topic="reply/t",
        )
        final = app.collect(rid)[-1].json()
        time.sleep(0.3)  # the audit events follow the reply
        seen = []
        while not tap.inbox.empty():
            m = tap.inbox.get()
            if not m.topic.endswith("/request"):
                seen.append((m.topic, m.payload))
    return final, seen


def events(d: Daemon, seen: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p in seen if t == f"edged/{d.device_id}/events/tool"]


def test_tool_rules_decide_every_call_before_the_wire(
    make_daemon: Callable[..., Daemon], broker: Broker, tmp_path: Path
) -> None:
    pack = tmp_path / "home.toml"
    pack.write_text(PACK)
    d = make_daemon(EDGED_LOCAL__BACKEND="fake", EDGED_GUARDIAN__PACKS=json.dumps([str(pack)]))
    final, seen = ask(
        d,
        broker.port,
        {"id": "c1", "name": "unlock_door", "arguments": {}},
        {"id": "c2", "name": "set_thermostat", "arguments": {"celsius": 21}},
        {"id": "c3", "name": "oven_on", "arguments": {}},
    )
    assert final["type"] == "result" and final["finish_reason"] == "tool_calls", final
    assert [(c["id"], c.get("confirm")) for c in final["tool_calls"]] == [
        ("c2", None),
        ("c3", True),
    ]
    assert final["guardian"]["tools"] == {"door.never": 1, "oven.ask": 1}
    replies = [p for t, p in seen if t == "reply/t"]
    assert replies and not any(b"unlock_door" in p for p in replies)
    audit = events(d, seen)
    assert [(e["call_id"], e["decision"], e["rules"]) for e in audit] == [
        ("c1", "block", ["door.never"]),
        ("c2", "allow", []),
        ("c3", "confirm", ["oven.ask"]),
    ]
    assert all("arguments" not in e for e in audit)  # log.log_prompts is off

    # out of bounds, and blocked outright: nothing is released
    final, seen = ask(
        d,
        broker.port,
        {"id": "c4", "name": "set_thermostat", "arguments": {"celsius": 40}},
        {"id": "c5", "name": "unlock_door", "arguments": {}},
    )
    assert final["type"] == "error" and final["code"] == "blocked", final
    assert "thermostat.range" in final["message"] and "door.never" in final["message"]
    assert not any(b"unlock_door" in p or b"c4" in p for t, p in seen if t == "reply/t")

    # reload: tool_default = "block" now blocks tools no rule allows
    assert d.proc is not None
    pack.write_text(PACK.replace('name = "home"', 'name = "home"\ntool_default = "block"'))
    assert ask(d, broker.port, {"name": "play_music", "arguments": {}})[0]["type"] == "result"
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "event=reloaded" not in d.logs():
        assert time.monotonic() < deadline, d.logs()
        time.sleep(0.05)
    final, _ = ask(d, broker.port, {"name": "play_music", "arguments": {}})
    assert final["code"] == "blocked" and "tool_default:home" in final["message"], final
