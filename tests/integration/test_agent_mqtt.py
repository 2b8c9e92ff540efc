"""Device tools through the real daemon, a real Mosquitto and the scripted remote
(tests.scripted_cloud) as the model (issue 15 B): the model calls ``light_set``; a device
(a test client subscribed to ``home/#``) sees the publish on ``home/kitchen/light/set`` and
answers on ``home/kitchen/light/state``; the remote's next request carries that result as a
tool turn, and the final text comes back. A blocked device call is never published, and a
device that does not answer becomes a tool result saying it timed out."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Broker, Client, Daemon, DeviceStub, Msg
from tests.scripted_cloud import (
    Call,
    ScriptedCloud,
    call_fragments,
    cloud_env,
    finish,
    stream,
    text,
)

pytestmark = pytest.mark.integration

ROOM = {"type": "string", "enum": ["kitchen", "hall"]}
TOOLS = {
    "light_set": {
        "description": "Switch a room's light on or off.",
        "parameters": {
            "type": "object",
            "properties": {"room": ROOM, "on": {"type": "boolean"}},
            "required": ["room", "on"],
        },
        "topic": "home/{room}/light/set",
        "reply_topic": "home/{room}/light/state",
        "timeout_s": 5,
    },
    "unlock_door": {"description": "Unlock the front door.", "topic": "home/door/unlock"},
    "notes_get": {
        "description": "Read the fridge notes.",
        "topic": "home/notes/get",
        "reply_topic": "home/notes/value",
    },
    "heater_set": {"description": "Switch the heater on.", "topic": "home/heater/set"},
    "fan_set": {
        "description": "Switch the fan.",
        "topic": "home/fan/set",
        "reply_topic": "home/fan/state",
        "timeout_s": 0.5,
    },
}
PACK = """name = "home"
[[rule]]
id = "door.never"
kind = "tool"
tools = ["unlock_door"]
action = "block"

[[rule]]
id = "heater.ask"
kind = "tool"
tools = ["heater_set"]
action = "confirm"
"""


NOTE = "Call Alice at alice@example.com about the party."
ROOT = Path(__file__).resolve().parents[2]


class Device(DeviceStub):
    """A test client subscribed to ``home/#``: records every message, and answers each
    ``home/<room>/light/set`` with ``{"state": "on"|"off"}`` on ``home/<room>/light/state``
    (the fan never answers)."""

    def answer(self, msg: Msg, levels: list[str]) -> None:
        if msg.topic == "home/notes/get":
            self.client.publish("home/notes/value", NOTE, wait=False)
        if len(levels) == 4 and levels[2:] == ["light", "set"]:
            on = json.loads(msg.payload)["on"]
            state = json.dumps({"state": "on" if on else "off"})
            self.client.publish(f"home/{levels[1]}/light/state", state, wait=False)


@pytest.fixture
def agent_daemon(
    make_daemon: Callable[..., Daemon], cloud: ScriptedCloud, tmp_path: Path
) -> Daemon:
    cloud.clear()
    pack = tmp_path / "home.toml"
    pack.write_text(PACK)
    return make_daemon(
        **cloud_env(
            cloud,
            EDGED_AGENT__TOOL_TOPIC_PREFIXES='["home/"]',
            EDGED_TOOLS=json.dumps(TOOLS),
            EDGED_GUARDIAN__PACKS=json.dumps(
                [str(pack), str(ROOT / "configs/guardian/default.toml")]
            ),
        ),
    )


def ask(broker: Broker, d: Daemon, prompt: str, tools: list[str]) -> dict[str, Any]:
    rid = uuid.uuid4().hex[:10]
    body = {"id": rid, "prompt": prompt, "route": "cloud", "device_tools": tools}
    with Client(broker.port) as c:
        c.subscribe("reply/agent")
        c.publish(f"edged/{d.device_id}/request", json.dumps(body), response_topic="reply/agent")
        msgs = c.collect(rid, timeout_s=30)
    final = msgs[-1].json()
    assert final["type"] == "result", final
    return final


def tool_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def called(name: str, arguments: dict[str, Any], cid: str) -> Any:
    return stream(
        call_fragments([Call(name, json.dumps(arguments), id=cid)], size=7), finish("tool_calls")
    )


def test_a_device_tool_runs_over_mqtt_and_its_reply_reaches_the_model(
    broker: Broker, agent_daemon: Daemon, cloud: ScriptedCloud
) -> None:
    cloud.script(
        called("light_set", {"room": "kitchen", "on": True}, "call_1"),
        stream(text("The kitchen ", "light is on."), finish("stop")),
    )
    with Device(broker.port) as dev:
        res = ask(broker, agent_daemon, "Switch the kitchen light on.", ["light_set"])
        time.sleep(0.2)
    sets = [m for m in dev.seen if m.topic == "home/kitchen/light/set"]
    assert len(sets) == 1 and json.loads(sets[0].payload) == {"room": "kitchen", "on": True}
    assert len(cloud.bodies) == 2
    first, second = cloud.bodies
    assert "light_set" in [t["function"]["name"] for t in first["tools"]]
    [turn] = tool_turns(second)
    assert turn["tool_call_id"] == "call_1" and json.loads(turn["content"]) == {"state": "on"}
    assert res["text"] == "The kitchen light is on."
    assert res["finish_reason"] == "stop" and res["tool_calls"] == []
    [step] = res["steps"]
    assert step["tool"] == "light_set" and step["decision"] == "allow" and step["outcome"] == "ok"
    assert step["latency_ms"] is not None


def test_a_blocked_device_call_is_never_published(
    broker: Broker, agent_daemon: Daemon, cloud: ScriptedCloud
) -> None:
    cloud.script(
        called("unlock_door", {}, "call_d"),
        stream(text("I may not unlock the door."), finish("stop")),
    )
    with Device(broker.port) as dev:
        res = ask(broker, agent_daemon, "Unlock the door.", ["unlock_door", "light_set"])
        time.sleep(0.5)
    assert "home/door/unlock" not in dev.topics()
    [turn] = tool_turns(cloud.bodies[1])
    assert json.loads(turn["content"])["error"] == "blocked" and "door.never" in turn["content"]
    assert res["steps"][0]["decision"] == "block" and res["steps"][0]["rules"] == ["door.never"]
    assert res["guardian"]["tools"] == {"door.never": 1}


def test_no_reply_in_time_becomes_a_tool_result(
    broker: Broker, agent_daemon: Daemon, cloud: ScriptedCloud
) -> None:
    cloud.script(
        called("fan_set", {}, "call_f"),
        stream(text("The fan did not answer."), finish("stop")),
    )
    with Device(broker.port) as dev:
        res = ask(broker, agent_daemon, "Switch the fan.", ["fan_set"])
    assert "home/fan/set" in dev.topics()
    [turn] = tool_turns(cloud.bodies[1])
    content = json.loads(turn["content"])
    assert content["error"] == "timeout" and "home/fan/state" in content["message"]
    assert res["steps"][0]["outcome"] == "timeout"
    assert res["text"] == "The fan did not answer."


@pytest.mark.parametrize("approve", [True, False])
def test_a_confirm_call_waits_for_the_apps_approval(
    broker: Broker, agent_daemon: Daemon, cloud: ScriptedCloud, approve: bool
) -> None:
    cloud.script(
        called("heater_set", {}, "call_h"),
        stream(text("Done." if approve else "Not switched."), finish("stop")),
    )
    d = agent_daemon
    rid = uuid.uuid4().hex[:10]
    body = {"id": rid, "prompt": "Heat.", "route": "cloud", "device_tools": ["heater_set"]}
    with Device(broker.port) as dev, Client(broker.port) as c:
        c.subscribe("reply/agent")
        c.publish(f"edged/{d.device_id}/request", json.dumps(body), response_topic="reply/agent")
        asked = c.get(timeout_s=30).json()
        assert asked["type"] == "confirm" and asked["id"] == rid, asked
        assert asked["call_id"] == "call_h" and asked["tool"] == "heater_set"
        assert asked["rules"] == ["heater.ask"]
        time.sleep(0.3)
        assert "home/heater/set" not in dev.topics(), "nothing acts before the approval"
        answer = {"id": rid, "call_id": "call_h", "approve": approve}
        c.publish(f"edged/{d.device_id}/confirm", json.dumps(answer))
        final = c.collect(rid, timeout_s=30)[-1].json()
        time.sleep(0.3)
    assert final["type"] == "result", final
    assert ("home/heater/set" in dev.topics()) is approve
    step = final["steps"][0]
    assert step["decision"] == "confirm" and step["outcome"] == ("ok" if approve else "not_run")


def test_personal_data_in_a_tool_result_never_reaches_the_remote(
    broker: Broker, agent_daemon: Daemon, cloud: ScriptedCloud
) -> None:
    cloud.script(
        called("notes_get", {}, "call_n"),
        stream(text("the remote must not be asked again"), finish("stop")),
    )
    with Device(broker.port):
        res = ask(broker, agent_daemon, "Read my fridge notes.", ["notes_get"])
    assert len(cloud.bodies) == 1, "the later turn stayed on the device"
    assert "alice@example.com" not in json.dumps(cloud.bodies)
    assert res["route"]["backend"] == "local"
    assert "pii.input.local" in res["guardian"]["input"]
    assert res["steps"][0]["outcome"] == "ok"
