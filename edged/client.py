"""A small synchronous client for edged's request/response protocol (used by ``edged ask``).

It speaks MQTT v5 request/response: a Response Topic of its own under ``reply/`` and a
Correlation Data value, then prints chunks as they arrive.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from edged.mqtt.link import props_for


class AskError(Exception):
    """The client could not get an answer (broker unreachable, no reply in time)."""


def ask(
    request: dict[str, Any],
    *,
    host: str,
    port: int,
    request_topic: str,
    timeout_s: float = 120.0,
    username: str | None = None,
    password: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Send one request; yield every reply message (chunks, then the final one)."""
    inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
    token = uuid.uuid4().hex[:12]
    reply_topic = f"reply/ask-{token}"
    correlation = token.encode()
    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"edged-ask-{token}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if username is not None:
        c.username_pw_set(username, password)

    def on_socket_open(client: Any, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            inbox.put(("fail", f"broker refused the connection: {reason}"))
            return
        client.subscribe(reply_topic, qos=1)

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        inbox.put(("subscribed", None))

    def on_message(client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr is not None and bytes(corr) != correlation:
            return
        try:
            inbox.put(("message", json.loads(msg.payload)))
        except ValueError:
            inbox.put(("fail", f"reply is not JSON: {msg.payload[:80]!r}"))

    c.on_socket_open = on_socket_open
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    try:
        c.connect(host, port, keepalive=30, clean_start=True)
    except OSError as e:
        raise AskError(f"cannot reach the broker at {host}:{port}: {e}") from e
    c.loop_start()
    try:
        kind, value = _get(inbox, 10.0, "the broker did not confirm the subscription")
        if kind == "fail":
            raise AskError(str(value))
        props = props_for(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        c.publish(request_topic, json.dumps(request).encode(), qos=1, properties=props)
        while True:
            kind, value = _get(
                inbox,
                timeout_s,
                f"no reply within {timeout_s:.0f} s "
                f"(is edged running and subscribed to {request_topic}?)",
            )
            if kind == "fail":
                raise AskError(str(value))
            yield value
            if value.get("type") in ("result", "error"):
                return
    finally:
        c.disconnect()
        c.loop_stop()


def _get(inbox: queue.Queue[tuple[str, Any]], timeout_s: float, why: str) -> tuple[str, Any]:
    try:
        return inbox.get(timeout=timeout_s)
    except queue.Empty:
        raise AskError(why) from None
