"""The agent loop on the real local model (issue 15): the daemon serves SmolLM2-135M through
its local backend (1 thread), a request forces a device tool with ``tool_choice``, the
grammar-constrained decoder makes the call valid, edged publishes it on the tool's topic, a
test client answers on the reply topic, and the model's next turn (``auto``: a forced choice
binds the first turn only) answers. A blocked device call is never published.

The model is tiny and not trained for tools: these tests check edged's promises (the call is
valid and published on its filled topic, the reply reaches the model, the result lists the
steps and comes back once), never what the model chose to say.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, Broker, Client, Daemon, DeviceStub, Msg

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
}
PACK = """name = "home"
[[rule]]
id = "door.never"
kind = "tool"
tools = ["unlock_door"]
action = "block"
"""


class Device(DeviceStub):
    """A test client on ``home/#``: records every message and answers each
    ``home/<room>/light/set`` on ``home/<room>/light/state``."""

    def answer(self, msg: Msg, levels: list[str]) -> None:
        if len(levels) == 4 and levels[2:] == ["light", "set"]:
            on = json.loads(msg.payload)["on"]
            state = json.dumps({"state": "on" if on else "off"})
            self.client.publish(f"home/{levels[1]}/light/state", state, wait=False)


@pytest.fixture
def local_agent(make_daemon: Callable[..., Daemon], tmp_path: Path) -> Iterator[Daemon]:
    pack = tmp_path / "home.toml"
    pack.write_text(PACK)
    yield make_daemon(
        EDGED_AGENT__TOOL_TOPIC_PREFIXES='["home/"]',
        EDGED_AGENT__MAX_STEPS="3",
        EDGED_TOOLS=json.dumps(TOOLS),
        EDGED_GUARDIAN__PACKS=json.dumps([str(pack), str(ROOT / "configs/guardian/default.toml")]),
    )


def forced(broker: Broker, d: Daemon, tool: str, prompt: str) -> tuple[dict[str, Any], list[Msg]]:
    """A request that forces ``tool``: its final reply, and every reply message before it."""
    rid = uuid.uuid4().hex[:10]
    body = {
        "id": rid,
        "prompt": prompt,
        "device_tools": ["light_set", "unlock_door"],
        "tool_choice": {"type": "function", "function": {"name": tool}},
        "max_tokens": 48,
        "temperature": 0,
    }
    with Client(broker.port) as c:
        c.subscribe("reply/local-agent")
        c.publish(
            f"edged/{d.device_id}/request", json.dumps(body), response_topic="reply/local-agent"
        )
        msgs = c.collect(rid, timeout_s=120)
    final = msgs[-1].json()
    assert final["type"] == "result", final
    assert [m.json()["type"] for m in msgs[:-1]] == ["chunk"] * (len(msgs) - 1)
    return final, msgs[:-1]


def test_the_local_model_calls_a_forced_device_tool_and_answers_its_result(
    broker: Broker, local_agent: Daemon
) -> None:
    with Device(broker.port) as dev:
        res, chunks = forced(broker, local_agent, "light_set", "Switch the kitchen light on.")
        time.sleep(0.3)
    sets = [m for m in dev.seen if m.topic.endswith("/light/set")]
    assert sets, "the forced call was published"
    first = json.loads(sets[0].payload)
    # the grammar made the call valid: its arguments fill the topic, within the schema
    assert set(first) == {"room", "on"} and first["room"] in ROOM["enum"]
    assert isinstance(first["on"], bool)
    assert sets[0].topic == f"home/{first['room']}/light/set"
    steps = res["steps"]
    assert steps[0]["tool"] == "light_set" and steps[0]["decision"] == "allow"
    assert steps[0]["outcome"] == "ok" and steps[0]["latency_ms"] is not None
    # every device call the model made was run (one publish each), none reached the client
    assert len(sets) == len(steps) and all(s["outcome"] == "ok" for s in steps)
    assert res["tool_calls"] == []
    assert not any("light_set" in m.json()["text"] for m in chunks), "a call never streams"
    # the forced choice bound the first turn only: a later turn answered in text (finished,
    # or cut at max_tokens), unless the model kept calling until the step limit (max_steps
    # 3: two calls run, the third turn's not run, and the result ends "length")
    assert res["finish_reason"] in ("stop", "length"), res
    assert f"event=agent_turn id={res['id']} turn=2 tool_choice=auto" in local_agent.logs()
    if len(steps) < 2:
        assert res["text"].strip(), res
        assert "".join(m.json()["text"] for m in chunks) == res["text"]
    assert res["usage"]["completion_tokens"] > 0


def test_a_blocked_device_call_of_the_local_model_is_never_published(
    broker: Broker, local_agent: Daemon
) -> None:
    with Device(broker.port) as dev:
        res, _ = forced(broker, local_agent, "unlock_door", "Unlock the front door.")
        time.sleep(0.5)
    assert "home/door/unlock" not in [m.topic for m in dev.seen]
    step = res["steps"][0]
    assert (step["tool"], step["decision"], step["rules"]) == (
        "unlock_door",
        "block",
        ["door.never"],
    )
    assert step["outcome"] == "not_run" and step["latency_ms"] is None
    assert res["guardian"]["tools"]["door.never"] >= 1
    assert res["tool_calls"] == []
