"""SIGHUP reloads device tools in the real daemon (issue 15), with a real Mosquitto and the
scripted remote (tests.scripted_cloud) as the model: after a reload that moves ``light_set``
to new topics the next call is published on the new topic and its reply, on the new reply
topic, reaches the model; a broken config is refused and the tools keep their topics; and the
periodic telemetry counts every call."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, Broker, Client, Daemon, DeviceStub, Msg
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

TOOL = """
[agent]
tool_topic_prefixes = {prefixes}
[tools.light_set]
description = "Switch a room's light on or off."
topic = "{topic}"
reply_topic = "{reply}"
timeout_s = 5
[tools.light_set.parameters]
type = "object"
required = ["room", "on"]
[tools.light_set.parameters.properties]
room = {{ type = "string", enum = ["kitchen", "hall"] }}
on = {{ type = "boolean" }}
"""


def write_config(path: Path, **tool: str) -> None:
    values = {
        "prefixes": '["home/"]',
        "topic": "home/{room}/light/set",
        "reply": "home/{room}/light/state",
        **tool,
    }
    base = (ROOT / "configs" / "edged.toml").read_text()
    path.write_text(base + TOOL.format(**values))


class Device(DeviceStub):
    """Answers every ``home/<room>/<thing>/set`` with its ``on`` on ``.../<thing>/state``."""

    def answer(self, msg: Msg, levels: list[str]) -> None:
        if len(levels) == 4 and levels[3] == "set":
            state = json.dumps({"state": "on" if json.loads(msg.payload)["on"] else "off"})
            self.client.publish("/".join([*levels[:3], "state"]), state, wait=False)

    def sets(self) -> list[str]:
        return [m.topic for m in self.seen if m.topic.endswith("/set")]


def ask(broker: Broker, d: Daemon) -> dict[str, Any]:
    rid = uuid.uuid4().hex[:10]
    body = {
        "id": rid,
        "prompt": "Kitchen light on.",
        "route": "cloud",
        "device_tools": ["light_set"],
    }
    with Client(broker.port) as c:
        c.subscribe("reply/agent")
        c.publish(f"edged/{d.device_id}/request", json.dumps(body), response_topic="reply/agent")
        final = c.collect(rid, timeout_s=30)[-1].json()
    assert final["type"] == "result", final
    return final


def switched(cloud: ScriptedCloud, d: Daemon, broker: Broker, dev: Device) -> tuple[str, Any]:
    """One request whose model calls light_set: the topic it was published on, and the tool
    result the model got."""
    cloud.clear()
    call = Call("light_set", json.dumps({"room": "kitchen", "on": True}), id="call_1")
    cloud.script(
        stream(call_fragments([call], size=5), finish("tool_calls")),
        stream(text("On."), finish("stop")),
    )
    before = len(dev.sets())
    res = ask(broker, d)
    time.sleep(0.2)
    [topic] = dev.sets()[before:]
    [step] = res["steps"]
    assert step["decision"] == "allow" and step["outcome"] == "ok", res
    tool_turn = [m for m in cloud.bodies[1]["messages"] if m["role"] == "tool"][-1]
    return topic, json.loads(tool_turn["content"])


def sighup(d: Daemon, event: str) -> None:
    assert d.proc is not None
    seen = d.logs().count(event)
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while d.logs().count(event) == seen:
        assert time.monotonic() < deadline, d.logs()
        time.sleep(0.05)


def test_sighup_moves_a_device_tool_and_a_broken_config_keeps_it(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud: ScriptedCloud, tmp_path: Path
) -> None:
    config = tmp_path / "edged.toml"
    write_config(config)
    d = make_daemon(start=False, **cloud_env(cloud, EDGED_TELEMETRY__INTERVAL_S="0.5"))
    d.config = config
    d.start()
    with Device(broker.port) as dev:
        assert switched(cloud, d, broker, dev) == ("home/kitchen/light/set", {"state": "on"})
        write_config(config, topic="home/{room}/lamp/set", reply="home/{room}/lamp/state")
        sighup(d, "event=reloaded")
        # the new topic; the reply came on the new reply topic (subscribed by the reload)
        assert switched(cloud, d, broker, dev) == ("home/kitchen/lamp/set", {"state": "on"})
        for broken in (
            {"topic": "garden/{room}/lamp/set"},  # outside tool_topic_prefixes
            {"topic": "home/{floor}/lamp/set"},  # a placeholder that is no parameter
            {"prefixes": '["edged/"]', "topic": "edged/{room}/lamp/set"},  # edged's own
        ):
            write_config(config, **broken)
            sighup(d, "event=reload_refused")
            assert switched(cloud, d, broker, dev)[0] == "home/kitchen/lamp/set", broken
    # telemetry counts the five calls, all allowed, published and answered
    with Client(broker.port) as c:
        c.subscribe(f"edged/{d.device_id}/telemetry")
        deadline = time.monotonic() + 10
        while True:
            tools = c.get(timeout_s=5).json()["tools"]
            if tools["device"]["published"] == 5 or time.monotonic() > deadline:
                break
    assert tools["device"] == {
        **{"calls": 5, "allow": 5, "block": 0, "confirm": 0},
        **{"published": 5, "timeouts": 0, "not_confirmed": 0, "refused": 0},
    }
    assert tools["client"]["calls"] == 0
