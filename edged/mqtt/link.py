"""An MQTT v5 link whose paho client is driven from the asyncio event loop.

paho does the protocol; this module gives it a socket watched by the event loop
(``add_reader``/``add_writer``), as aiomqtt and Home Assistant do, so every paho callback
runs on the event loop thread. The one exception is the blocking TCP connect, which runs in
a worker thread; the socket callbacks it fires are handed to the loop with
``call_soon_threadsafe`` and touch nothing else.

The link sets TCP_NODELAY (without it a QoS 1 round trip on loopback costs 40-90 ms),
connects with clean_start False and a session expiry so QoS 1 messages sent while we are
away are queued by the broker, acknowledges QoS 1 messages only when told to (in arrival
order, as MQTT requires), and reconnects forever with jittered exponential back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.mqtt.acks import AckTracker

log = logging.getLogger("edged.mqtt")


@dataclass(frozen=True, slots=True)
class Will:
    """Last-will message the broker publishes if we vanish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Incoming:
    """A received PUBLISH, with the v5 properties edged cares about.

    ``received_at_s`` is ``time.monotonic()`` when paho parsed it. ``expiry_s`` is the
    remaining Message Expiry Interval the broker sent, or None.
    """

    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool
    retain: bool
    received_at_s: float
    response_topic: str | None
    correlation_data: bytes | None
    expiry_s: int | None


def props_for(packet_type: int) -> Properties:
    """An empty MQTT v5 property set for one packet type."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]


class MqttLink:
    """One MQTT v5 connection, kept up for the daemon's life by :meth:`run`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive_s: int = 30,
        session_expiry_s: int = 3600,
        clean_start: bool = False,
        receive_maximum: int = 64,
        username: str | None = None,
        password: str | None = None,
        will: Callable[[], Will] | None = None,
        subscriptions: tuple[tuple[str, int], ...] = (),
        on_message: Callable[[Incoming], None] | None = None,
        on_connected: Callable[[bool], None] | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        manual_ack: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self._keepalive_s = keepalive_s
        self._session_expiry_s = session_expiry_s
        self._clean_start = clean_start
        self._receive_maximum = receive_maximum
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._on_connected = on_connected
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._sock: socket.socket | None = None
        self._connack: asyncio.Future[int] | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self.connected = asyncio.Event()
        self._stopping = False
        self.connects = 0
        self.last_error: str | None = None

        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack,
            reconnect_on_failure=False,
        )
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            c.tls_set_context(tls)  # the handshake runs in the connect thread
        self._will = will
        c.on_socket_open = self._cb_socket_open
        c.on_socket_close = self._cb_socket_close
        c.on_socket_register_write = self._cb_register_write
        c.on_socket_unregister_write = self._cb_unregister_write
        c.on_connect = self._cb_connect
        c.on_disconnect = self._cb_disconnect
        c.on_message = self._cb_message
        self._client = c
        self.acks = AckTracker(self._send_puback)

    def _send_puback(self, mid: int) -> None:
        rc = self._client.ack(mid, 1)
        if rc != paho.MQTT_ERR_SUCCESS:
            # Not connected: the broker redelivers the message after we reconnect, and the
            # id de-duplication keeps it from being served twice.
            log.info("event=puback_not_sent mid=%d rc=%s", mid, rc)

    # --- thread bridge -----------------------------------------------------------------------

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the event loop thread (now if we are on it, else soon, thread-safely)."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    # --- paho socket callbacks ---------------------------------------------------------------

    def _cb_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._on_loop(self._watch, sock)

    def _watch(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._sock = sock
        self._loop.add_reader(sock, self._readable)

    def _cb_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unwatch, sock)

    def _unwatch(self, sock: socket.socket) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if self._sock is sock:
            self._sock = None

    def _cb_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._add_writer, sock)

    def _add_writer(self, sock: socket.socket) -> None:
        assert self._loop is not None
        if sock.fileno() < 0:
            return
        if self._client.is_connected():
            # Write now: the socket almost always takes it, which spares the event loop a
            # writer to add, a wake-up to write, and the writer to remove, per message.
            self._writable()
            if not self._client.want_write() or sock.fileno() < 0:
                return
        self._loop.add_writer(sock, self._writable)

    def _cb_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: socket.socket) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    def _readable(self) -> None:
        try:
            self._client.loop_read()
        except Exception:
            log.exception("event=mqtt_read_failed")

    def _writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception:
            log.exception("event=mqtt_write_failed")

    # --- paho protocol callbacks (all on the loop thread) -----------------------------------

    def _cb_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._connack is not None and not self._connack.done():
            rc = int(reason.value) if hasattr(reason, "value") else int(reason)
            self._connack.set_result(rc)
            self._session_present = bool(getattr(flags, "session_present", False))

    def _cb_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._on_loop(self._mark_lost, str(reason))

    def _mark_lost(self, reason: str) -> None:
        self.last_error = reason
        self.connected.clear()
        self._lost.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(f"disconnected: {reason}"))

    def _cb_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is None:
            return
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        expiry = getattr(props, "MessageExpiryInterval", None) if props else None
        incoming = Incoming(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            mid=msg.mid,
            dup=bool(msg.dup),
            retain=bool(msg.retain),
            received_at_s=float(getattr(msg, "timestamp", time.monotonic())),
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=bytes(correlation) if correlation is not None else None,
            expiry_s=int(expiry) if expiry is not None else None,
        )
        try:
            self._on_message(incoming)
        except Exception:
            # A handler bug must never take the connection down; the message is acked so
            # the broker does not redeliver it forever.
            log.exception("event=message_handler_failed topic=%s", msg.topic)
            if msg.qos == 1:
                self.acks.track(msg.mid)
                self.acks.done(msg.mid)

    # --- public API ----------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
        expiry_s: int | None = None,
    ) -> paho.MQTTMessageInfo:
        """Queue one PUBLISH. QoS 1 messages are kept by paho and resent after a reconnect."""
        props: Properties | None = None
        if correlation_data is not None or response_topic is not None or expiry_s is not None:
            props = props_for(PacketTypes.PUBLISH)
            if correlation_data is not None:
                props.CorrelationData = correlation_data
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if expiry_s is not None:
                props.MessageExpiryInterval = expiry_s
        return self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def subscribe(self, topic: str, qos: int) -> None:
        """Add a subscription (kept while the link lives): sent now when connected, and at
        every reconnect; one already held is not sent again."""
        if (topic, qos) not in self._subscriptions:
            self._subscriptions = (*self._subscriptions, (topic, qos))
            if self.connected.is_set():
                self._client.subscribe(topic, qos=qos)

    def ack_when_done(self, incoming: Incoming) -> Callable[[], None]:
        """Track a QoS 1 message; returns the callable that marks its work finished."""
        if incoming.qos != 1 or not self.acks.track(incoming.mid):
            # QoS 0, or a redelivery of a message still in progress: the first copy's
            # completion sends the one PUBACK.
            return lambda: None
        generation = self.acks.generation
        return lambda: self.acks.done(incoming.mid, generation)

    async def run(self) -> None:
        """Connect, and reconnect with jittered back-off, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        delay = self._backoff[0]
        while not self._stopping:
            try:
                session_present = await self._connect_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # connect refused, DNS, CONNACK error, ...
                self.last_error = str(e) or type(e).__name__
                sleep_s = random.uniform(delay / 2, delay)
                log.warning(
                    "event=mqtt_connect_failed host=%s port=%d error=%r retry_s=%.2f",
                    self.host,
                    self.port,
                    self.last_error,
                    sleep_s,
                )
                self._cleanup_socket()
                await asyncio.sleep(sleep_s)
                delay = min(delay * 2, self._backoff[1])
                continue
            delay = self._backoff[0]
            self.connects += 1
            log.info(
                "event=mqtt_connected host=%s port=%d session_present=%s",
                self.host,
                self.port,
                session_present,
            )
            if not session_present:
                # A fresh session: the broker has no unacked messages of ours to redeliver.
                self.acks.reset()
            for topic, qos in self._subscriptions:
                self._client.subscribe(topic, qos=qos)
            self.connected.set()
            if self._on_connected is not None:
                self._on_connected(session_present)
            misc = asyncio.create_task(self._misc_loop(), name="mqtt-misc")
            try:
                await self._lost.wait()
            finally:
                misc.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await misc
            if not self._stopping:
                log.warning("event=mqtt_connection_lost reason=%r", self.last_error)
                await asyncio.sleep(random.uniform(0, self._backoff[0]))

    async def _connect_once(self) -> bool:
        assert self._loop is not None
        self._lost.clear()
        self._connack = self._loop.create_future()
        self._session_present = False
        if self._will is not None:  # made fresh for each connection (its timestamp)
            w = self._will()
            self._client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        props = props_for(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        await self._loop.run_in_executor(
            None,
            lambda: self._client.connect(
                self.host,
                self.port,
                keepalive=self._keepalive_s,
                clean_start=self._clean_start,
                properties=props,
            ),
        )
        rc = await asyncio.wait_for(self._connack, timeout=max(10.0, self._keepalive_s))
        if rc != 0:
            raise ConnectionError(f"broker refused connection: reason code {rc}")
        return self._session_present

    def _cleanup_socket(self) -> None:
        if self._sock is not None:
            self._unwatch(self._sock)
        with contextlib.suppress(Exception):
            self._client._sock_close()

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._client.loop_misc()

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Wait until the link is connected (subscriptions sent)."""
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Wait until queued outgoing packets are written, or ``timeout_s`` passes."""
        end = time.monotonic() + timeout_s
        # paho offers no event for "all written", so poll (only at shutdown).
        while self._client.want_write() and time.monotonic() < end and self.connected.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Flush, then disconnect cleanly (the broker then does not publish our will)."""
        self._stopping = True
        await self.flush(timeout_s)
        # whether the DISCONNECT went out (else the broker publishes the will): logged, as
        # a status that reads "connection lost" after a clean stop is otherwise a mystery
        clean = False
        if self.connected.is_set():
            props = props_for(PacketTypes.DISCONNECT)
            # Keep the session for session_expiry_s so queued requests survive a restart.
            props.SessionExpiryInterval = self._session_expiry_s
            self._client.disconnect(properties=props)
            await self.flush(timeout_s)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout_s)
                clean = True
        log.info("event=mqtt_closed disconnect_sent=%s last_error=%r", clean, self.last_error)
        self._lost.set()
        self._cleanup_socket()
