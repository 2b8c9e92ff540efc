#!/usr/bin/env python3
"""The whole tool-calling loop against edged, written against paho-mqtt directly.

1. ask with ``tools`` (a toy ``set_alarm`` and ``get_time``);
2. when the result ends in ``tool_calls``, run each call here, on the client;
3. send the conversation back with the assistant turn (its calls, as they came) and one
   ``tool`` turn per call carrying the result;
4. print the answer once a turn ends in text (or give up after ``--max-steps`` turns).

It uses nothing of edged's own code; the contract is docs/protocol.md ("Tool calls: the
whole loop") and docs/tools.md. Exit status: 0 for an answer, 1 for an error reply or no
answer within the steps, 2 when the broker cannot be reached or no reply came in time.

    pip install "paho-mqtt>=2.1,<3"
    python examples/tool_loop.py --device kitchen-1 --tool-choice required "Wake me at 6:30."

``--tool-choice`` applies to the first turn only (a forced call on every turn would never
let the model answer); the follow-ups use ``auto``.
"""

from __future__ import annotations

import argparse
import json
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

#: The tools offered, in the OpenAI shape (docs/tools.md).
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "set_alarm",
            "description": "Set an alarm at a time of day (24-hour clock).",
            "parameters": {
                "type": "object",
                "properties": {
                    "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                    "minute": {"type": "integer", "minimum": 0, "maximum": 59},
                    "label": {"type": "string", "maxLength": 24},
                },
                "required": ["hour", "minute"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "The time of day on this device."},
    },
]


class Alarms:
    """The client's side of the tools: a toy alarm clock. Each method returns the tool's
    result as a JSON-able value."""

    def __init__(self, clock: Any = time.localtime) -> None:
        self.set: list[tuple[int, int, str]] = []
        self._clock = clock

    def set_alarm(self, hour: int, minute: int, label: str = "") -> dict[str, Any]:
        """Remember an alarm."""
        self.set.append((hour, minute, label))
        return {"ok": True, "alarm": f"{hour:02d}:{minute:02d}", "label": label}

    def get_time(self) -> dict[str, Any]:
        """The local time of day."""
        now = self._clock()
        return {"time": f"{now.tm_hour:02d}:{now.tm_min:02d}"}


def run_call(tools: Alarms, call: dict[str, Any]) -> str:
    """Run one call of a result's ``tool_calls``; its result as the text of a tool turn.

    edged released the call only after it validated against the tool's schema, so the
    arguments are one JSON object of the right shape; a client still answers a tool it does
    not know with an error result rather than crashing.
    """
    fn = call.get("function") or {}
    name = fn.get("name")
    try:
        args = json.loads(fn.get("arguments") or "{}")
    except ValueError:
        return json.dumps({"error": "arguments are not JSON"})
    try:
        if name == "set_alarm":
            return json.dumps(tools.set_alarm(**args))
        if name == "get_time":
            return json.dumps(tools.get_time(**args))
    except TypeError as e:  # arguments this client's function does not take
        return json.dumps({"error": str(e)})
    return json.dumps({"error": f"no tool named {name!r}"})


def follow_up(
    messages: list[dict[str, Any]], result: dict[str, Any], tools: Alarms
) -> list[dict[str, Any]]:
    """The conversation for the next request: ``messages``, then the assistant turn with the
    result's calls exactly as they came, then one tool turn per call with what it returned."""
    calls = result["tool_calls"]
    turn = {"role": "assistant", "content": result.get("text") or None, "tool_calls": calls}
    answers = [
        {"role": "tool", "tool_call_id": c["id"], "content": run_call(tools, c)} for c in calls
    ]
    return [*messages, turn, *answers]


def request_body(
    messages: list[dict[str, Any]], step: int, tool_choice: str, max_tokens: int
) -> dict[str, Any]:
    """The request of one step (a new id each time)."""
    body: dict[str, Any] = {
        "id": f"loop-{uuid.uuid4().hex[:12]}-{step}",
        "messages": messages,
        "tools": TOOLS,
        "max_tokens": max_tokens,
        "stream": False,
    }
    if step == 0 and tool_choice != "auto":
        named = tool_choice not in ("none", "required")
        body["tool_choice"] = (
            {"type": "function", "function": {"name": tool_choice}} if named else tool_choice
        )
    return body


class Edged:
    """One MQTT v5 connection with a reply topic of its own; :meth:`ask` sends a request and
    returns its final reply."""

    def __init__(self, host: str, port: int, device: str) -> None:
        self.device = device
        self.reply_topic = f"reply/tool-loop-{uuid.uuid4().hex[:12]}"
        self.correlation = uuid.uuid4().bytes
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()  # network thread -> main
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"tool-loop-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30, clean_start=True)
        self.client.loop_start()

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.inbox.put(("fail", f"broker refused the connection: {reason}"))
        else:
            c.subscribe(self.reply_topic, qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: int, _r: Any, _p: Any) -> None:
        self.inbox.put(("subscribed", None))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr is not None and bytes(corr) != self.correlation:
            return
        try:
            self.inbox.put(("reply", json.loads(msg.payload)))
        except ValueError:
            self.inbox.put(("fail", f"reply is not JSON: {msg.payload[:80]!r}"))

    def wait_subscribed(self, timeout_s: float) -> str | None:
        """None once the reply topic is subscribed, else why not."""
        kind, value = self._next(timeout_s)
        if kind == "subscribed":
            return None
        return str(value or "the broker did not confirm the subscription")

    def _next(self, timeout_s: float) -> tuple[str, Any]:
        try:
            return self.inbox.get(timeout=timeout_s)
        except queue.Empty:
            return ("timeout", None)

    def ask(self, body: dict[str, Any], timeout_s: float) -> dict[str, Any] | str:
        """The final reply (``result`` or ``error``) to ``body``, or why none came."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = self.correlation
        topic = f"edged/{self.device}/request"
        self.client.publish(topic, json.dumps(body), qos=1, properties=props)
        deadline = time.monotonic() + timeout_s
        while True:
            kind, msg = self._next(max(0.0, deadline - time.monotonic()))
            if kind == "timeout":
                return f"no reply within {timeout_s:g} s (is edged running as {self.device!r}?)"
            if kind == "fail":
                return str(msg)
            if msg.get("id") in (body["id"], None) and msg.get("type") in ("result", "error"):
                return dict(msg)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    """Run the loop; see the module docstring."""
    p = argparse.ArgumentParser(description="Run edged's tool-calling loop over MQTT v5.")
    p.add_argument("prompt", nargs="?", default="Wake me at 6:30.")
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker host")
    p.add_argument("--port", type=int, default=1883, help="MQTT broker port")
    p.add_argument("--device", default=socket.gethostname(), help="edged device id")
    p.add_argument(
        "--tool-choice", default="auto", help="first turn: auto, none, required or a tool name"
    )
    p.add_argument("--max-steps", type=int, default=4, help="most turns before giving up")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--timeout-s", type=float, default=60.0, help="longest wait for a reply")
    args = p.parse_args(argv)

    try:
        edged = Edged(args.host, args.port, args.device)
    except OSError as e:
        print(f"cannot reach the broker at {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    try:
        why = edged.wait_subscribed(10.0)
        if why is not None:
            print(why, file=sys.stderr)
            return 2
        tools = Alarms()
        messages: list[dict[str, Any]] = [{"role": "user", "content": args.prompt}]
        for step in range(args.max_steps):
            reply = edged.ask(
                request_body(messages, step, args.tool_choice, args.max_tokens), args.timeout_s
            )
            if isinstance(reply, str):
                print(reply, file=sys.stderr)
                return 2
            if reply["type"] == "error":
                print(f"error {reply.get('code')}: {reply.get('message')}", file=sys.stderr)
                return 1
            if not reply.get("tool_calls"):
                print(reply.get("text", ""))
                print(f"[{step + 1} turn(s), alarms set: {tools.set}]", file=sys.stderr)
                return 0
            calls = reply["tool_calls"]
            messages = follow_up(messages, reply, tools)
            for call, answer in zip(calls, messages[-len(calls) :], strict=True):
                fn = call["function"]
                print(f"call {fn['name']}({fn['arguments']}) -> {answer['content']}")
        print(f"no answer in text after {args.max_steps} turns", file=sys.stderr)
        return 1
    finally:
        edged.close()


if __name__ == "__main__":
    sys.exit(main())
