#!/usr/bin/env python3
"""A minimal voice-app client for edged, written against paho-mqtt directly.

It shows the whole MQTT v5 request/response contract of docs/protocol.md with nothing of
edged's own code:

1. subscribe to a reply topic of our own (under ``reply/``, which edged allows by default);
2. publish the request at QoS 1 on ``edged/<device>/request`` with that topic as the MQTT v5
   Response Topic and a random Correlation Data value;
3. print each ``chunk`` as it streams in (a voice app would feed these to text-to-speech);
4. on the final ``result``, print its route, timings, token usage and energy; on an
   ``error``, print its code and message.

Exit status: 0 for a result, 1 for an error reply, 2 when no answer came (broker
unreachable, or nothing within --timeout-s).

    pip install "paho-mqtt>=2.1,<3"
    python examples/voice_client.py --device kitchen-1 "What is the capital of France?"
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import sys
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Ask edged one question over MQTT v5.")
    p.add_argument("prompt", nargs="?", default="Name a colour.")
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker host")
    p.add_argument("--port", type=int, default=1883, help="MQTT broker port")
    p.add_argument("--device", default=socket.gethostname(), help="edged device id")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--timeout-s", type=float, default=60.0, help="longest wait for a reply")
    p.add_argument("--username", help="broker user; the password is read from $MQTT_PASSWORD")
    args = p.parse_args(argv)

    reply_topic = f"reply/voice-{uuid.uuid4().hex[:12]}"
    correlation = uuid.uuid4().bytes  # tells our replies from anyone else's
    request_id = f"voice-{uuid.uuid4().hex[:12]}"
    inbox: queue.Queue[tuple[str, Any]] = queue.Queue()  # network thread -> main thread

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"voice-client-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    if args.username:
        client.username_pw_set(args.username, os.environ.get("MQTT_PASSWORD"))

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            inbox.put(("fail", f"broker refused the connection: {reason}"))
        else:
            c.subscribe(reply_topic, qos=1)  # before publishing, so no reply is missed

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        inbox.put(("subscribed", None))

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr is not None and bytes(corr) != correlation:
            return  # someone else's reply on our topic
        try:
            inbox.put(("reply", json.loads(msg.payload)))
        except ValueError:
            inbox.put(("fail", f"reply is not JSON: {msg.payload[:80]!r}"))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(args.host, args.port, keepalive=30, clean_start=True)
    except OSError as e:
        print(f"cannot reach the broker at {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    client.loop_start()
    try:
        return converse(
            client,
            inbox=inbox,
            args=args,
            reply_topic=reply_topic,
            correlation=correlation,
            request_id=request_id,
        )
    finally:
        client.disconnect()
        client.loop_stop()


def converse(
    client: mqtt.Client,
    *,
    inbox: queue.Queue[tuple[str, Any]],
    args: argparse.Namespace,
    reply_topic: str,
    correlation: bytes,
    request_id: str,
) -> int:
    kind, value = next_event(inbox, 10.0)
    if kind != "subscribed":
        print(value or "the broker did not confirm the subscription", file=sys.stderr)
        return 2

    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = reply_topic
    props.CorrelationData = correlation
    request = {"id": request_id, "prompt": args.prompt, "max_tokens": args.max_tokens}
    t0 = time.monotonic()
    client.publish(f"edged/{args.device}/request", json.dumps(request), qos=1, properties=props)

    first_chunk_s: float | None = None
    while True:
        kind, msg = next_event(inbox, args.timeout_s)
        if kind == "timeout":
            print(
                f"\nno reply within {args.timeout_s:g} s (is edged running as "
                f"device {args.device!r}?)",
                file=sys.stderr,
            )
            return 2
        if kind == "fail":
            print(f"\n{msg}", file=sys.stderr)
            return 2
        if msg.get("id") not in (request_id, None):
            continue
        if msg.get("type") == "chunk":
            if first_chunk_s is None:
                first_chunk_s = time.monotonic() - t0
            print(msg.get("text", ""), end="", flush=True)  # speak it as it comes
        elif msg.get("type") == "result":
            print()
            print_result(msg, first_chunk_s)
            return 0
        elif msg.get("type") == "error":
            print(f"\nerror {msg.get('code')}: {msg.get('message')}", file=sys.stderr)
            return 1


def next_event(inbox: queue.Queue[tuple[str, Any]], timeout_s: float) -> tuple[str, Any]:
    try:
        return inbox.get(timeout=timeout_s)
    except queue.Empty:
        return ("timeout", None)


def print_result(msg: dict[str, Any], first_chunk_s: float | None) -> None:
    route = msg.get("route") or {}
    timing = msg.get("timing_ms") or {}
    usage = msg.get("usage") or {}
    energy = msg.get("energy") or {}
    print(f"route:  {route.get('backend')} ({', '.join(route.get('reasons', []))})")
    heard = "-" if first_chunk_s is None else f"{first_chunk_s * 1000:.0f}"
    print(
        f"timing: queue {timing.get('queue')} ms, first token {timing.get('ttft')} ms, "
        f"total {timing.get('total')} ms (first chunk heard here after {heard} ms)"
    )
    print(
        f"tokens: {usage.get('prompt_tokens')} in, {usage.get('completion_tokens')} out, "
        f"finish {msg.get('finish_reason')}"
    )
    if energy.get("joules") is None:
        print(f"energy: unknown ({energy.get('reason')})")
    else:
        kind = "estimated" if energy.get("estimated") else "measured"
        print(
            f"energy: {energy['joules']:.3f} J ({kind}, source {energy.get('source')}), "
            f"{energy.get('tokens_per_joule')} tokens/J"
        )


if __name__ == "__main__":
    sys.exit(main())
