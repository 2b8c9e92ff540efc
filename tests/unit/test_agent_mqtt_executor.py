"""MqttToolExecutor with a recording publish in place of the link (the real link and broker:
tests/integration/test_agent_mqtt.py): reply topics are subscribed as filters, the first
non-retained reply after the publish is the result, no reply is None."""

from __future__ import annotations

import asyncio

from edged.agent.mqtt_executor import MqttToolExecutor, reply_subscriptions
from edged.config import Config

CFG = Config.model_validate(
    {
        "agent": {"tool_topic_prefixes": ["home/"]},
        "tools": {
            "light_set": {
                "parameters": {"type": "object", "properties": {"room": {"type": "string"}}},
                "topic": "home/{room}/light/set",
                "reply_topic": "home/{room}/light/state",
            },
            "zone": {
                "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
                "topic": "home/zone{n}/set",
                "reply_topic": "home/zone{n}/state",
            },
            "again": {
                "parameters": {"type": "object", "properties": {"room": {"type": "string"}}},
                "topic": "home/{room}/light/toggle",
                "reply_topic": "home/{room}/light/state",
            },
            "door": {"topic": "home/door/unlock"},
        },
    }
)


def test_reply_topics_become_filters_once_each() -> None:
    assert reply_subscriptions(CFG.tools) == ("home/+/light/state", "home/+/state")


def test_the_first_reply_after_the_publish_is_the_result() -> None:
    sent: list[tuple[str, bytes]] = []

    async def main() -> str | None:
        ex = MqttToolExecutor(CFG.tools, lambda t, p: sent.append((t, p)))

        def reply_soon(topic: str, payload: bytes) -> None:
            sent.append((topic, payload))
            loop = asyncio.get_running_loop()
            loop.call_soon(ex.on_message, "home/kitchen/light/state", b'{"old": 1}', True)
            loop.call_soon(ex.on_message, "home/hall/light/state", b'{"other": 1}', False)
            loop.call_soon(ex.on_message, "home/kitchen/light/state", b'{"state": "on"}', False)
            loop.call_soon(ex.on_message, "home/kitchen/light/state", b'{"state": "off"}', False)

        ex._publish = reply_soon
        return await ex.call(
            "home/kitchen/light/set", '{"room": "kitchen"}', "home/kitchen/light/state", 2.0
        )

    assert asyncio.run(main()) == '{"state": "on"}'
    assert sent == [("home/kitchen/light/set", b'{"room": "kitchen"}')]


def test_no_reply_is_none_and_a_tool_without_reply_topic_returns_at_once() -> None:
    sent: list[tuple[str, bytes]] = []

    async def main() -> tuple[str | None, str | None, int]:
        ex = MqttToolExecutor(CFG.tools, lambda t, p: sent.append((t, p)))
        none = await ex.call("home/hall/light/set", "{}", "home/hall/light/state", 0.05)
        sent_only = await ex.call("home/door/unlock", "{}", None, 1.0)
        return none, sent_only, len(ex._waiting)

    assert asyncio.run(main()) == (None, "", 0)  # nothing left waiting
    assert [t for t, _ in sent] == ["home/hall/light/set", "home/door/unlock"]


def test_messages_on_other_topics_are_not_taken() -> None:
    ex = MqttToolExecutor(CFG.tools, lambda t, p: None)
    assert ex.on_message("home/kitchen/light/state", b"x", False)
    assert ex.on_message("home/zone3/state", b"x", True)
    assert not ex.on_message("home/kitchen/light/set", b"x", False)
    assert not ex.on_message("edged/dev/request", b"x", False)


def test_bad_utf8_in_a_reply_is_replaced() -> None:
    async def main() -> str | None:
        ex = MqttToolExecutor(CFG.tools, lambda t, p: None)

        def publish(topic: str, payload: bytes) -> None:
            asyncio.get_running_loop().call_soon(ex.on_message, "home/zone1/state", b"\xff1", False)

        ex._publish = publish
        return await ex.call("home/zone1/set", "{}", "home/zone1/state", 2.0)

    assert asyncio.run(main()) == "\ufffd1"
