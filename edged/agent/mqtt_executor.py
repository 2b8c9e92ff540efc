"""The device tools' executor over MQTT: a call's arguments are published (QoS 1) on its
filled topic, and the first message after that on its reply topic is its result.

The reply topics are subscribed when the link connects (each ``{placeholder}`` level as a
``+`` wildcard), so a reply topic is always subscribed before anything is published on the
tool's topic, and no subscribe round trip is on the path of a call. A reload adds the new
tools' filters (:meth:`MqttToolExecutor.add_tools`; the link subscribes them before the new
tools can be called). A retained message is
the device's old state, not this call's answer: it is ignored. Messages arrive on the event
loop thread (edged.mqtt.link drives paho from the loop), so no lock is needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from paho.mqtt.client import topic_matches_sub

from edged.config_agent import ToolConfig

log = logging.getLogger("edged.agent")

#: Publishes one message (topic, payload) with QoS 1: ``MqttLink.publish``.
Publish = Callable[[str, bytes], Any]


def reply_subscriptions(tools: Mapping[str, ToolConfig]) -> tuple[str, ...]:
    """The topic filters covering every tool's reply topic: a level with a placeholder
    becomes ``+`` (distinct, in the tools' order)."""
    out: dict[str, None] = {}
    for tool in tools.values():
        if tool.reply_topic is not None:
            levels = ["+" if "{" in lv else lv for lv in tool.reply_topic.split("/")]
            out["/".join(levels)] = None
    return tuple(out)


class MqttToolExecutor:
    """Runs device-tool calls over an MQTT link (the daemon's own connection)."""

    def __init__(self, tools: Mapping[str, ToolConfig], publish: Publish) -> None:
        self._publish = publish
        self.subscriptions = reply_subscriptions(tools)
        self._waiting: dict[str, list[asyncio.Future[str]]] = {}

    def add_tools(self, tools: Mapping[str, ToolConfig]) -> tuple[str, ...]:
        """A reload's tools: their reply filters, now also consumed here. The old filters
        stay (a reply to a call still in flight arrives on one; the link stays subscribed
        to them until edged restarts)."""
        new = reply_subscriptions(tools)
        self.subscriptions = tuple(dict.fromkeys(self.subscriptions + new))
        return new

    async def call(
        self, topic: str, payload_json: str, reply_topic: str | None, timeout_s: float
    ) -> str | None:
        """Publish ``payload_json`` on ``topic``; the first reply on ``reply_topic`` as text
        (UTF-8, bad bytes replaced), or None after ``timeout_s``; "" without a reply topic."""
        payload = payload_json.encode("utf-8")
        if reply_topic is None:
            self._publish(topic, payload)
            return ""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(reply_topic, [])
        waiters.append(fut)  # waiting before the publish: a fast reply is not missed
        try:
            self._publish(topic, payload)
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            log.info("event=tool_reply_timeout topic=%s timeout_s=%g", reply_topic, timeout_s)
            return None
        finally:
            waiters.remove(fut)
            if not waiters:
                self._waiting.pop(reply_topic, None)

    def on_message(self, topic: str, payload: bytes, retain: bool) -> bool:
        """Take a message from the link: True when it is on a reply subscription (it is then
        consumed here, whether a call waits for it or not)."""
        if not any(topic_matches_sub(sub, topic) for sub in self.subscriptions):
            return False
        if retain:
            return True
        for fut in self._waiting.get(topic, ()):
            if not fut.done():
                fut.set_result(payload.decode("utf-8", errors="replace"))
        return True
