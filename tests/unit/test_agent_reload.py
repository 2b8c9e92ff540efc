"""SIGHUP reloads ``[tools]`` and ``[agent]`` (issue 15): App.reload builds the device tools
of the new config, a broken one is refused and the old tools keep running, a request in
flight keeps the tools it started with, and new reply topics are subscribed and consumed.
The real daemon and broker: tests/integration/test_agent_reload.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from edged.agent.build import reload_agent
from edged.agent.loop import Agent
from edged.agent.mqtt_executor import MqttToolExecutor
from edged.app import App
from edged.config import Config, PolicyConfig, RouterConfig, load_config
from edged.energy.meter import NullMeter
from edged.guardian import PassGuardian
from edged.mqtt.topics import Topics
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.types import (
    ChatMessage,
    Finished,
    ReplyAddress,
    Request,
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
from tests.unit.doubles import Sink

ROOM = '{ type = "object", properties = { room = { type = "string" } }, required = ["room"] }'


def config_text(
    tmp_path: Path,
    topic: str = "home/{room}/light/set",
    reply: str = "home/{room}/light/state",
    prefixes: str = '["home/"]',
    extra: str = "",
) -> str:
    return f"""{extra}
[local]
backend = "fake"
[http]
enabled = false
[telemetry]
spool_dir = "{tmp_path / "spool"}"
state_dir = "{tmp_path / "state"}"
[agent]
tool_topic_prefixes = {prefixes}
max_steps = 4
[tools.light_set]
parameters = {ROOM}
topic = "{topic}"
reply_topic = "{reply}"
"""


def app_at(tmp_path: Path) -> tuple[App, Path]:
    path = tmp_path / "edged.toml"
    path.write_text(config_text(tmp_path))
    return App(load_config(path), path), path


def subscriptions(app: App) -> set[tuple[str, int]]:
    return set(app.link._subscriptions)


def test_a_reload_builds_the_new_tools_and_subscribes_their_reply_topics(tmp_path: Path) -> None:
    app, path = app_at(tmp_path)
    old = app.pipeline.agent
    assert old is not None and old.tools["light_set"].topic == "home/{room}/light/set"
    path.write_text(
        config_text(tmp_path, "home/{room}/lamp/set", "home/{room}/lamp/state")
        .replace("max_steps = 4", "max_steps = 2\nconfirm_timeout_s = 5")
        .replace("[tools.light_set]", '[tools.fan_set]\ntopic = "home/fan/set"\n[tools.light_set]')
    )
    assert asyncio.run(app.reload())
    new = app.pipeline.agent
    assert new is not None and new is not old
    assert new.tools["light_set"].topic == "home/{room}/lamp/set" and "fan_set" in new.tools
    assert new.max_steps == 2 and new.executor is old.executor and new.observe is old.observe
    assert app.approver.timeout_s == 5
    # the new reply filter is subscribed (the old one stays: a reply in flight may use it)
    subs = subscriptions(app)
    assert {("home/+/lamp/state", 0), ("home/+/light/state", 0)} <= subs
    assert (app.topics.confirm, 1) in subs
    assert app.tools.subscriptions == ("home/+/light/state", "home/+/lamp/state")
    # ingress offers the reloaded tools: a request may opt into the new one
    assert "fan_set" in app.ingress._cfg.tools


BROKEN = {
    "a topic outside the prefixes": {"topic": "garden/{room}/light/set"},
    "a placeholder that is no parameter": {"topic": "home/{floor}/light/set"},
    "a prefix under edged's own": {"prefixes": '["edged/"]', "topic": "edged/{room}/light/set"},
    "a reply topic with a wildcard": {"reply": "home/+/light/state"},
    # mqtt.topic_prefix is not reloaded: the tools are checked against the running one
    "under the prefix edged runs under": {
        "extra": '[mqtt]\ntopic_prefix = "site"',
        "prefixes": '["edged/"]',
        "topic": "edged/{room}/light/set",
        "reply": "edged/{room}/light/state",
    },
}


@pytest.mark.parametrize("why", list(BROKEN))
def test_a_broken_config_is_refused_and_the_old_tools_keep_running(
    tmp_path: Path, why: str
) -> None:
    app, path = app_at(tmp_path)
    old, subs = app.pipeline.agent, subscriptions(app)
    path.write_text(config_text(tmp_path, **BROKEN[why]))
    assert not asyncio.run(app.reload()), why
    assert app.pipeline.agent is old
    assert subscriptions(app) == subs, "nothing subscribed for a refused config"
    assert app.tools.subscriptions == ("home/+/light/state",)


def test_reload_agent_checks_before_it_changes_anything() -> None:
    cfg = Config.model_validate(
        {
            "mqtt": {"topic_prefix": "site"},
            "agent": {"tool_topic_prefixes": ["edged/"]},
            "tools": {"t": {"topic": "edged/t/set", "reply_topic": "edged/t/state"}},
        }
    )
    subscribed: list[tuple[str, int]] = []

    class Link:
        def subscribe(self, topic: str, qos: int) -> None:
            subscribed.append((topic, qos))

    ex = MqttToolExecutor({}, lambda t, p: None)
    old = Agent({}, ex, 4)
    with pytest.raises(ValueError, match="under edged's own prefix"):
        reload_agent(cfg, old, Topics("edged", "d1"), Link())
    assert subscribed == [] and ex.subscriptions == ()
    new = reload_agent(cfg, old, Topics("site", "d1"), Link())
    assert set(new.tools) == {"t"}
    assert subscribed == [("edged/t/state", 0), ("site/d1/confirm", 1)]


def test_the_executor_consumes_replies_on_a_reloaded_tools_topic() -> None:
    cfg = load_config(None, {})
    ex = MqttToolExecutor(cfg.tools, lambda t, p: None)
    assert not ex.on_message("home/fan/state", b"on", False)
    new = Config.model_validate(
        {
            "agent": {"tool_topic_prefixes": ["home/"]},
            "tools": {"fan": {"topic": "home/fan/set", "reply_topic": "home/fan/state"}},
        }
    )
    assert ex.add_tools(new.tools) == ("home/fan/state",)

    async def main() -> str | None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, ex.on_message, "home/fan/state", b'{"on": true}', False)
        return await ex.call("home/fan/set", "{}", "home/fan/state", 2.0)

    assert asyncio.run(main()) == '{"on": true}'


# --- a request in flight keeps the tools it started with ---------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.topics: list[str] = []

    async def call(
        self, topic: str, payload_json: str, reply_topic: str | None, timeout_s: float
    ) -> str | None:
        self.topics.append(topic)
        return '{"state": "on"}'


class Held:
    """A backend whose first turn waits until released, then calls light_set."""

    supports_tools = True

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.turns = 0

    def healthy(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        self.turns += 1
        yield Started()
        if self.turns == 1:
            self.started.set()
            await self.release.wait()
            call = ToolCall("c1", "light_set", json.dumps({"room": "kitchen"}))
            yield ToolCalls((call,))
            yield Finished("tool_calls", Usage(5, 5))
        else:
            yield TextDelta("On.")
            yield Finished("stop", Usage(5, 1))


def tools_cfg(topic: str) -> Config:
    return Config.model_validate(
        {
            "agent": {"tool_topic_prefixes": ["home/"]},
            "tools": {
                "light_set": {
                    "parameters": json.loads(
                        '{"type": "object", "properties": {"room": {"type": "string"}}}'
                    ),
                    "topic": topic,
                }
            },
        }
    )


def test_a_request_in_flight_keeps_the_tools_it_started_with() -> None:
    before, after = tools_cfg("home/{room}/light/set"), tools_cfg("home/{room}/lamp/set")
    old_ex, new_ex = Recorder(), Recorder()
    spec = ToolSpec("light_set", "", dict(before.tools["light_set"].parameters))
    req = Request(
        id="r1",
        messages=(ChatMessage("user", "light"),),
        max_tokens=16,
        temperature=0.0,
        stream=False,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
        tools=(spec,),
        tool_choice=ToolChoice("auto"),
        device_tools=("light_set",),
    )

    async def main() -> list[Any]:
        backend = Held()
        backends: dict[str, Any] = {"local": backend}
        p = Pipeline(
            guardian=PassGuardian(),
            router=Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends),
            backends=backends,
            meter=NullMeter(),
            agent=Agent(before.tools, old_ex, 4),
        )
        sink = Sink()
        task = asyncio.create_task(p.handle(req, sink))
        await backend.started.wait()
        p.agent = Agent(after.tools, new_ex, 4)  # the reload, while the first turn runs
        backend.release.set()
        await task
        return sink.finals

    [res] = asyncio.run(main())
    assert isinstance(res, Result), res
    assert old_ex.topics == ["home/kitchen/light/set"] and new_ex.topics == []
