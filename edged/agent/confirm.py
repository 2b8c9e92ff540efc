"""Asking before acting: a device-tool call that a guardian ``confirm`` rule released runs
only once the app approves it (issue 15 A, docs/agents.md).

edged publishes a ``confirm`` message on the request's reply address::

    {"id": "<request id>", "type": "confirm", "call_id": "...", "tool": "light_set",
     "arguments": "{...}", "rules": ["light.ask"]}

and waits at most ``agent.confirm_timeout_s`` for
``{"id": "<request id>", "call_id": "...", "approve": true|false}`` on
``edged/<device_id>/confirm``. No answer in time is a denial; an answer for no pending call
is ignored. Messages arrive on the event loop thread (edged.mqtt.link).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from edged.tools.validate import parse_json
from edged.types import ReplyAddress, Request, ToolCall

log = logging.getLogger("edged.agent")

#: Largest confirm answer accepted, bytes.
MAX_CONFIRM_BYTES = 1024
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")

#: Publishes one reply (QoS 1) on a request's reply address.
PublishReply = Callable[[ReplyAddress, bytes], Any]


def parse_confirm(payload: bytes) -> tuple[str, str, bool]:
    """``(request id, call id, approve)`` of an answer; ValueError saying why it is not one
    (exactly the fields ``id``, ``call_id`` and ``approve``, a boolean)."""
    if len(payload) > MAX_CONFIRM_BYTES:
        raise ValueError(f"confirm is {len(payload)} bytes; at most {MAX_CONFIRM_BYTES}")
    try:
        data = parse_json(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"confirm is not valid JSON: {e}") from None
    if not isinstance(data, dict) or set(data) != {"id", "call_id", "approve"}:
        raise ValueError('confirm must be an object with exactly "id", "call_id" and "approve"')
    rid, cid, approve = data["id"], data["call_id"], data["approve"]
    if not isinstance(rid, str) or not rid or not set(rid) <= _ID_CHARS or len(rid) > 128:
        raise ValueError("confirm id must be a request id")
    if not isinstance(cid, str) or not cid or len(cid) > 256:
        raise ValueError("confirm call_id must be a call id")
    if not isinstance(approve, bool):
        raise ValueError("confirm approve must be true or false")
    return rid, cid, approve


class MqttApprover:
    """Asks the app over MQTT and waits for its answer."""

    def __init__(self, publish_reply: PublishReply, timeout_s: float) -> None:
        self._publish = publish_reply
        self.timeout_s = timeout_s
        self._pending: dict[tuple[str, str], asyncio.Future[bool]] = {}

    async def approve(self, request: Request, call: ToolCall, rules: tuple[str, ...]) -> bool:
        """True once the app approves ``call``; False when it denies or does not answer."""
        key = (request.id, call.id)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        message = {
            "id": request.id,
            "type": "confirm",
            "call_id": call.id,
            "tool": call.name,
            "arguments": call.arguments,
            "rules": list(rules),
        }
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            self._publish(request.reply, body)
            return await asyncio.wait_for(fut, self.timeout_s)
        except asyncio.TimeoutError:
            log.info("event=confirm_timeout id=%s call_id=%s", request.id, call.id)
            return False
        finally:
            self._pending.pop(key, None)

    def on_confirm(self, payload: bytes) -> None:
        """An answer arrived on the confirm topic (malformed or unmatched: logged, ignored)."""
        try:
            rid, cid, approve = parse_confirm(payload)
        except ValueError as e:
            log.info("event=confirm_refused error=%r", str(e))
            return
        fut = self._pending.get((rid, cid))
        if fut is None or fut.done():
            log.info("event=confirm_ignored id=%s call_id=%s reason=not_pending", rid, cid)
            return
        fut.set_result(approve)
