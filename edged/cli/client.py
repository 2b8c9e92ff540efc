"""A small synchronous client for edged's request/response protocol (used by ``edged ask``).

It speaks MQTT v5 request/response: a Response Topic of its own under ``reply/`` and a
Correlation Data value, then prints chunks as they arrive. It connects like the daemon does:
the caller passes the broker user name, password and TLS context that ``edged.app`` builds
from the same config (``mqtt_password``, ``tls_context``).
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes

from edged.mqtt.link import props_for


class AskError(Exception):
    """The client could not get an answer (broker unreachable, TLS or login refused, no reply
    in time). The message is one line, fit to show as is."""


class AskAuthError(AskError):
    """The broker refused the user name or password (CONNACK 0x86, 0x87 or 0x8C)."""


#: CONNACK reason codes that mean "these credentials are not accepted".
_AUTH_REFUSALS = frozenset({0x86, 0x87, 0x8C})


def cli_client(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> paho.Client:
    """A paho MQTT v5 client for a command-line tool, with the broker login and TLS the
    daemon uses (``edged.mqtt.connect.mqtt_password``, ``tls_context``); not connected yet."""
    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if username is not None:
        c.username_pw_set(username, password)
    if tls is not None:
        c.tls_set_context(tls)
    return c


def ask(
    request: dict[str, Any],
    *,
    host: str,
    port: int,
    request_topic: str,
    timeout_s: float = 120.0,
    username: str | None = None,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[dict[str, Any]]:
    """Send one request; yield every reply message (chunks, then the final one).

    ``tls``: connect with TLS using this context (it verifies the broker's certificate and
    may present a client certificate). Raises :class:`AskError` (one line) when the broker
    cannot be reached, the TLS handshake fails, the broker refuses the connection
    (:class:`AskAuthError` for the credentials), the subscription or the request, or no
    reply comes in time.
    """
    where = f"{host}:{port}{' (TLS)' if tls is not None else ''}"
    inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
    token = uuid.uuid4().hex[:12]
    reply_topic = f"reply/ask-{token}"
    correlation = token.encode()
    c = cli_client(f"edged-ask-{token}", username=username, password=password, tls=tls)
    connected = False
    last_error: list[str] = []  # the network thread's last error (e.g. a TLS alert)

    def on_log(client: Any, userdata: Any, level: int, text: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            last_error[:] = [text]

    def on_socket_open(client: Any, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        nonlocal connected
        if reason.is_failure:
            if reason.value in _AUTH_REFUSALS:
                inbox.put(("auth", f"the broker at {where} refused the login: {reason}"))
            else:
                inbox.put(("fail", f"the broker at {where} refused the connection: {reason}"))
            return
        connected = True
        client.subscribe(reply_topic, qos=1)

    def on_disconnect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if connected:
            return
        # closed before the CONNACK: e.g. a TLS broker that wants a client certificate
        # (with TLS 1.3 it says so only after the handshake, in the network thread)
        why = last_error[0].removeprefix("failed to receive on socket: ") if last_error else reason
        hint = (
            "; does it want a client certificate ([mqtt] cert_file, key_file)?"
            if tls
            else "; is it a TLS listener ([mqtt] tls)?"
        )
        inbox.put(
            (
                "fail",
                f"the broker at {where} closed the connection before accepting it: {why}{hint}",
            )
        )

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        refused = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if refused:  # e.g. an ACL that does not let this user read reply/
            inbox.put(
                (
                    "fail",
                    f"the broker refused the subscription to {reply_topic}: {', '.join(refused)}",
                )
            )
        else:
            inbox.put(("subscribed", None))

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):  # e.g. an ACL on the request topic
            inbox.put(("fail", f"the broker refused the request on {request_topic}: {reason}"))

    def on_message(client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr is not None and bytes(corr) != correlation:
            return
        try:
            inbox.put(("message", json.loads(msg.payload)))
        except ValueError:
            inbox.put(("fail", f"reply is not JSON: {msg.payload[:80]!r}"))

    c.on_log = on_log
    c.on_socket_open = on_socket_open
    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.on_subscribe = on_subscribe
    c.on_publish = on_publish
    c.on_message = on_message
    try:
        c.connect(host, port, keepalive=30, clean_start=True)
    except ssl.SSLCertVerificationError as e:
        raise AskError(
            f"TLS: the certificate of the broker at {where} is not trusted: "
            f"{e.verify_message} (check [mqtt] ca_file and host)"
        ) from e
    except ssl.SSLError as e:
        raise AskError(f"TLS with the broker at {where} failed: {e.reason or e}") from e
    except OSError as e:
        raise AskError(f"cannot reach the broker at {where}: {e}") from e
    c.loop_start()
    try:
        kind, value = _get(inbox, 10.0, f"the broker at {where} did not confirm the subscription")
        _raise_on_failure(kind, value)
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
            _raise_on_failure(kind, value)
            yield value
            if value.get("type") in ("result", "error"):
                return
    finally:
        c.disconnect()
        c.loop_stop()


def _raise_on_failure(kind: str, value: Any) -> None:
    if kind == "auth":
        raise AskAuthError(str(value))
    if kind == "fail":
        raise AskError(str(value))


def _get(inbox: queue.Queue[tuple[str, Any]], timeout_s: float, why: str) -> tuple[str, Any]:
    try:
        return inbox.get(timeout=timeout_s)
    except queue.Empty:
        raise AskError(why) from None
