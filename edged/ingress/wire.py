"""The wire contract: request parsing and validation, reply encoding (docs/protocol.md).

Pure functions, no I/O. A request that cannot be served becomes a :class:`Rejection` that
knows where its error reply may go (or that it may go nowhere, in which case the caller
only logs it).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from edged.config import Config
from edged.errors import BadRequest, EdgedError, TooLarge
from edged.ingress import tools_wire
from edged.ingress.tools_wire import MessageBody
from edged.report import result_fields, steps_field
from edged.tools.validate import parse_json
from edged.types import ChatMessage, ReplyAddress, Request, Result, ToolCall

ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_TOPIC_BYTES = 512
#: Deepest JSON nesting accepted; checked before the parser runs.
MAX_JSON_DEPTH = 16
MAX_DEADLINE_MS = 3_600_000


class RequestBody(BaseModel):
    """The JSON body of a request, validated strictly (no type coercion, no unknown keys)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str | None = None
    prompt: str | None = None
    messages: list[MessageBody] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # absent: the device's default
    stream: StrictBool = True
    route: str = Field("auto", pattern=r"^[a-z][a-z0-9_-]{0,31}$")  # or a backend name
    sensitivity: Literal["normal", "private"] = "normal"
    deadline_ms: int | None = Field(None, ge=1, le=MAX_DEADLINE_MS)
    reply_to: str | None = None
    policy: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    conversation: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    # OpenAI shapes, checked by tools_wire (with paths into them); null is leaving them out
    tools: Any = None
    tool_choice: Any = None
    response_format: Any = None
    device_tools: list[str] | None = None  # [tools.NAME] that edged executes (agents.md)

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature_not_null(cls, v: object) -> object:
        if v is None:  # only a value that was sent reaches here: leave it out for the default
            raise ValueError("Input should be a valid number, not null")
        return v

    @model_validator(mode="after")
    def _prompt_xor_messages(self) -> RequestBody:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("exactly one of 'prompt' or 'messages' is required")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("'prompt' is empty")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("'messages' is empty")
            if self.messages[-1].role not in ("user", "tool"):
                raise ValueError("the last message must have role 'user' or 'tool'")
        return self


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request that gets an error reply instead of an answer.

    ``reply`` is None when no safe reply address is known; then it is only logged.
    """

    id: str | None
    reply: ReplyAddress | None
    error: EdgedError


def json_depth_exceeds(raw: str, limit: int) -> bool:
    """True when brackets nest deeper than ``limit`` (strings are skipped). Linear time."""
    depth = 0
    in_str = False
    escaped = False
    for ch in raw:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _has_lone_surrogate(text: str) -> bool:
    """True when a \\uD800-\\uDFFF escape is not part of a valid pair (cheap pre-check first)."""
    if not _SURROGATE_ESCAPE.search(text):
        return False
    try:
        json.dumps(json.loads(text), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def reply_topic_problem(
    topic: str, allowed_prefixes: list[str], topic_prefix: str = "edged", device_id: str = "+"
) -> str | None:
    """Why ``topic`` may not receive replies, or None when it may.

    Under edged's own prefix only ``<prefix>/<device_id>/response/...`` (this device's own
    response topics) may receive replies, so a client can aim replies neither at a request,
    status or telemetry topic nor into another device's replies.
    """
    if not topic:
        return "reply address is empty"
    if "+" in topic or "#" in topic:
        return "reply address contains a wildcard"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in topic):
        return "reply address contains control characters"
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return "reply address is too long"
    if not any(topic.startswith(p) for p in allowed_prefixes):
        return f"reply address must start with one of {allowed_prefixes}"
    levels = topic.split("/")
    if levels[0] == topic_prefix and (
        len(levels) < 4 or levels[1] != device_id or levels[2] != "response"
    ):
        return (
            f"under '{topic_prefix}/' replies may only go to "
            f"{topic_prefix}/{device_id}/response/..."
        )
    return None


_FIELD_PREFIX = re.compile(r"([a-z_]+): ")


def _format_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ""
        for p in e["loc"]:
            loc += f"[{p}]" if isinstance(p, int) else (f".{p}" if loc else str(p))
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            field = _FIELD_PREFIX.match(msg)
            if field and loc:  # "content: required" about messages[1]: messages[1].content
                loc, msg = f"{loc}.{field.group(1)}", msg[field.end() :]
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def decode_object(payload: bytes, what: str = "payload") -> dict[str, Any]:
    """``payload`` as a JSON object: UTF-8, nested at most MAX_JSON_DEPTH deep (checked
    before the parser runs), strict JSON (edged.tools.validate.parse_json), no unpaired
    surrogate escape; BadRequest naming ``what`` when it is not one. Every front door's
    request body goes through it (MQTT here, HTTP in openai_wire)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"{what} is not valid UTF-8 (byte {e.start})") from None
    if json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise BadRequest(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = parse_json(text)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from None
    if _has_lone_surrogate(text):
        raise BadRequest(f"{what} contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)")
    if not isinstance(data, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return data


def parse_request(
    payload: bytes,
    *,
    cfg: Config,
    default_reply_topic: Any,
    response_topic: str | None,
    correlation_data: bytes | None,
    received_at_s: float,
    expiry_s: int | None = None,
) -> Request | Rejection:
    """Validate one request payload. ``default_reply_topic(id)`` names the fallback topic."""
    prefixes = cfg.mqtt.allowed_reply_prefixes
    tp = cfg.mqtt.topic_prefix
    dev = cfg.device_id
    v5_reply: ReplyAddress | None = None
    v5_problem: str | None = None
    if response_topic is not None:
        v5_problem = reply_topic_problem(response_topic, prefixes, tp, dev)
        if v5_problem is None:
            v5_reply = ReplyAddress(response_topic, correlation_data)

    def reject(req_id: str | None, reply_to: Any, err: EdgedError) -> Rejection:
        reply = v5_reply
        if (
            reply is None
            and v5_problem is None
            and isinstance(reply_to, str)
            and reply_topic_problem(reply_to, prefixes, tp, dev) is None
        ):
            reply = ReplyAddress(reply_to, correlation_data)
        if reply is None and req_id is not None:
            reply = ReplyAddress(default_reply_topic(req_id), correlation_data)
        return Rejection(req_id, reply, err)

    # 1. size, before anything is parsed
    if len(payload) > cfg.ingress.max_payload_bytes:
        return reject(
            None,
            None,
            TooLarge(
                f"payload is {len(payload)} bytes; the limit is {cfg.ingress.max_payload_bytes}"
            ),
        )
    # 1b. the Correlation Data, echoed on every reply: bounded, so that one request cannot
    # make edged send 64 KiB with each chunk
    limit = cfg.ingress.max_correlation_bytes
    if correlation_data is not None and len(correlation_data) > limit:
        return reject(
            None,
            None,
            BadRequest(f"correlation data is {len(correlation_data)} bytes; the limit is {limit}"),
        )
    # 2. UTF-8 and JSON, with the nesting depth checked before the parser runs
    try:
        data = decode_object(payload)
    except BadRequest as e:
        return reject(None, None, e)
    # 3. the id: needed to address any reply
    raw_id = data.get("id")
    req_id: str
    if raw_id is None:
        req_id = uuid.uuid4().hex
    elif isinstance(raw_id, str) and ID_RE.fullmatch(raw_id):
        req_id = raw_id
    else:
        return reject(
            None, data.get("reply_to"), BadRequest("id must be 1-128 characters of [A-Za-z0-9._:-]")
        )
    reply_to = data.get("reply_to")
    # 4. the reply address: v5 response topic, else reply_to, else the default topic
    if v5_problem is not None:
        return reject(req_id, None, BadRequest(f"response topic refused: {v5_problem}"))
    if reply_to is not None:
        if not isinstance(reply_to, str):
            return reject(req_id, None, BadRequest("reply_to: must be a string"))
        problem = reply_topic_problem(reply_to, prefixes, tp, dev)
        if problem is not None:
            return reject(req_id, None, BadRequest(f"reply_to refused: {problem}"))
    # 5. the limits on tools and tool results, then every field, strictly
    over = tools_wire.early_limits(data, cfg.ingress)
    if over is not None:
        return reject(req_id, reply_to, over)
    try:
        body = RequestBody.model_validate(data)
    except ValidationError as e:
        return reject(req_id, reply_to, BadRequest(_format_errors(e)))
    limit = cfg.ingress.max_tokens_limit
    if body.max_tokens is not None and body.max_tokens > limit:
        return reject(
            req_id,
            reply_to,
            BadRequest(f"max_tokens: {body.max_tokens} is over this device's limit of {limit}"),
        )
    if body.messages is not None and len(body.messages) > cfg.ingress.max_messages:
        return reject(
            req_id,
            reply_to,
            BadRequest(f"messages: at most {cfg.ingress.max_messages} are accepted"),
        )
    try:
        if body.messages is not None:
            messages = tools_wire.conversation(body.messages)
        else:
            assert body.prompt is not None
            messages = (ChatMessage("user", body.prompt),)
        tools = () if body.tools is None else tools_wire.parse_tools(body.tools, cfg.ingress)
        tools, device_tools = tools_wire.offer_device_tools(
            tools, body.device_tools, cfg.tools, cfg.ingress
        )
        tool_choice = tools_wire.parse_tool_choice(body.tool_choice, tools)
        response_format = tools_wire.parse_response_format(body.response_format, cfg.ingress)
    except BadRequest as e:
        return reject(req_id, reply_to, e)
    deadlines = []
    if body.deadline_ms is not None:
        deadlines.append(received_at_s + body.deadline_ms / 1000.0)
    if expiry_s is not None:
        deadlines.append(received_at_s + float(expiry_s))
    reply = v5_reply or (
        ReplyAddress(reply_to, correlation_data)
        if reply_to is not None
        else ReplyAddress(default_reply_topic(req_id), correlation_data)
    )
    return Request(
        id=req_id,
        messages=messages,
        max_tokens=body.max_tokens or cfg.ingress.max_tokens_default,
        temperature=(
            body.temperature if body.temperature is not None else cfg.ingress.temperature_default
        ),
        stream=body.stream,
        route=body.route,
        sensitivity=body.sensitivity,
        reply=reply,
        received_at_s=received_at_s,
        deadline_at_s=min(deadlines) if deadlines else None,
        policy=body.policy,
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
        conversation=body.conversation,
        device_tools=device_tools,
    )


# --- replies ------------------------------------------------------------------------------------


MAX_CANCEL_BYTES = 1024


def parse_cancel(payload: bytes) -> str:
    """The request id of a cancel message ``{"id": "<request id>"}``; ValueError saying
    why when it is not one (no other field is allowed)."""
    if len(payload) > MAX_CANCEL_BYTES:
        raise ValueError(f"cancel is {len(payload)} bytes; at most {MAX_CANCEL_BYTES}")
    try:
        data = parse_json(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"cancel is not valid JSON: {e}") from None
    if not isinstance(data, dict) or set(data) != {"id"}:
        raise ValueError('cancel must be an object with exactly one field, "id"')
    rid = data["id"]
    if not isinstance(rid, str) or not ID_RE.fullmatch(rid):
        raise ValueError("cancel id must be a request id (1-128 of A-Z a-z 0-9 . _ : -)")
    return rid


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_chunk(request_id: str, seq: int, text: str) -> bytes:
    """A streamed piece of the answer."""
    return _dumps({"id": request_id, "type": "chunk", "seq": seq, "text": text})


def encode_error(request_id: str | None, err: EdgedError) -> bytes:
    """The final reply of a request that failed."""
    return _dumps({"id": request_id, "type": "error", "code": err.code, "message": err.message})


def encode_tool_calls(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """Tool calls in the OpenAI shape: ``{"id", "type": "function", "function": {"name",
    "arguments"}}``, ``arguments`` the JSON text of an object; ``"confirm": true`` only on a
    call a guardian confirm rule released (the app asks the user before it acts)."""
    out: list[dict[str, Any]] = []
    for c in calls:
        call: dict[str, Any] = {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        if c.confirm:
            call["confirm"] = True
        out.append(call)
    return out


def encode_result(result: Result) -> bytes:
    """The final reply of a request that succeeded; ``tool_calls`` is always a list (empty
    when the turn made none)."""
    return _dumps(
        {
            "id": result.id,
            "type": "result",
            "text": result.text,
            "tool_calls": encode_tool_calls(result.tool_calls),
            **result_fields(result),
            **steps_field(result.steps),
        }
    )
