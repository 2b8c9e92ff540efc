"""The OpenAI chat-completions shapes (docs/http.md) turned into edged's wire request, and
edged's results and errors turned back into OpenAI responses, chunks and error bodies.

Pure functions, no I/O. A body is converted to an edged request object and then goes
through :func:`edged.ingress.wire.parse_request`, so HTTP and MQTT share every check and
limit (size, depth, strict JSON, tools, tool turns, max_tokens, messages).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from edged.config import Config
from edged.errors import BadRequest, EdgedError
from edged.ingress import wire
from edged.report import result_fields
from edged.types import FinishReason, Request, Result

#: The extension field (request and response): edged's own options and report.
EXT = "edged"
#: Accepted and ignored: sampling knobs edged does not offer, and bookkeeping fields.
IGNORED = frozenset(
    {
        "user",
        "top_p",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "parallel_tool_calls",
        "metadata",
        "store",
        "stream_options",
        "service_tier",
    }
)
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "tools",
        "tool_choice",
        "response_format",
        "n",
        "logprobs",
        EXT,
    }
)
#: What the ``edged`` request field may hold (the MQTT fields of the same names).
_EXT_KEYS = frozenset({"sensitivity", "policy", "deadline_ms"})
#: HTTP status of each wire code.
STATUS = {
    "bad_request": 400,
    "too_large": 413,
    "busy": 429,
    "blocked": 403,
    "timeout": 504,
    "unavailable": 503,
    "shutting_down": 503,
    "internal": 500,
    "tool_call_invalid": 502,
}
_TYPES = {400: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def _content(i: int, content: Any) -> Any:
    """A message's content: a string, null, or a list of text parts (joined)."""
    if not isinstance(content, list):
        return content
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise BadRequest(f"messages[{i}].content[{j}]: only text parts are accepted")
        if not isinstance(part.get("text"), str):
            raise BadRequest(f"messages[{i}].content[{j}].text: must be a string")
        texts.append(part["text"])
    return "".join(texts)


def _messages(raw: Any) -> Any:
    if not isinstance(raw, list):
        return raw  # the strict check names the problem
    out: list[Any] = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict):
            out.append(turn)
            continue
        m = {k: v for k, v in turn.items() if k != "name"}  # a speaker's name: not used
        if m.get("role") == "developer":
            m["role"] = "system"
        if "content" in m:
            m["content"] = _content(i, m["content"])
        if m.get("role") == "assistant" and m.get("tool_calls") and m.get("content") == "":
            m["content"] = None
        out.append(m)
    return out


def edged_body(data: dict[str, Any], models: Sequence[str], request_id: str) -> dict[str, Any]:
    """The edged request object (docs/protocol.md) for an OpenAI chat body; raises
    BadRequest for what edged cannot honour (n > 1, logprobs, an unknown model or field)."""
    unknown = sorted(set(data) - _MAPPED - IGNORED)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown field")
    model = data.get("model")
    if not isinstance(model, str) or model not in models:
        raise BadRequest(f"model: must be one of {list(models)} (GET /v1/models)")
    if data.get("n", 1) != 1:
        raise BadRequest("n: only 1 choice is generated")
    if data.get("logprobs") not in (None, False):
        raise BadRequest("logprobs: not available")
    body: dict[str, Any] = {"id": request_id, "route": "auto" if model == "auto" else model}
    body["messages"] = _messages(data.get("messages"))
    body["stream"] = data.get("stream", False)
    tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    for key, value in (
        ("max_tokens", tokens),
        ("temperature", data.get("temperature")),
        ("tools", data.get("tools")),
        ("tool_choice", data.get("tool_choice")),
        ("response_format", data.get("response_format")),
    ):
        if value is not None:
            body[key] = value
    ext = data.get(EXT)
    if ext is not None:
        if not isinstance(ext, dict) or set(ext) - _EXT_KEYS:
            raise BadRequest(f"{EXT}: an object with only {sorted(_EXT_KEYS)}")
        body.update(ext)
    return body


def parse_chat(
    raw: bytes, *, cfg: Config, models: Sequence[str], request_id: str, received_at_s: float
) -> Request:
    """Validate one ``POST /v1/chat/completions`` body into a Request; raises the
    EdgedError (BadRequest, TooLarge) the MQTT path would reply with."""
    if len(raw) > cfg.ingress.max_payload_bytes:
        wire_reject = wire.parse_request(
            raw,
            cfg=cfg,
            default_reply_topic=_no_topic,
            response_topic=None,
            correlation_data=None,
            received_at_s=received_at_s,
        )
        assert isinstance(wire_reject, wire.Rejection)
        raise wire_reject.error
    body = edged_body(wire.decode_object(raw, "body"), models, request_id)
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    parsed = wire.parse_request(
        payload,
        cfg=cfg,
        default_reply_topic=_no_topic,
        response_topic=None,
        correlation_data=None,
        received_at_s=received_at_s,
    )
    if isinstance(parsed, wire.Rejection):
        raise parsed.error
    return parsed


def _no_topic(request_id: str) -> str:
    return f"http/{request_id}"  # never published: HTTP replies go to the connection


# --- responses --------------------------------------------------------------------------------


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_body(err: EdgedError, status: int | None = None) -> dict[str, Any]:
    """The OpenAI error object; ``code`` is edged's wire code."""
    status = status or STATUS.get(err.code, 500)
    return {
        "error": {
            "message": err.message,
            "type": _TYPES.get(status, "edged_error"),
            "param": None,
            "code": err.code,
        }
    }


def finish_reason(reason: FinishReason) -> str:
    """OpenAI's finish_reason for edged's (``cancelled`` has no OpenAI name: ``stop``)."""
    return "stop" if reason == "cancelled" else reason


def extension(result: Result) -> dict[str, Any]:
    """The ``edged`` response field: route and reasons, timing, energy, guardian report."""
    return result_fields(result)


def _usage(result: Result) -> dict[str, Any]:
    p, c = result.usage.prompt_tokens, result.usage.completion_tokens
    total = None if p is None or c is None else p + c
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": total}


def completion(result: Result, model: str, created: int) -> dict[str, Any]:
    """A whole ``chat.completion``."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.tool_calls:
        message["tool_calls"] = wire.encode_tool_calls(result.tool_calls)
        if not result.text:
            message["content"] = None
    return {
        "id": f"chatcmpl-{result.id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(result.finish_reason)}
        ],
        "usage": _usage(result),
        EXT: extension(result),
    }


def chunk(
    request_id: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with choice 0."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def final_chunks(
    result: Result, model: str, created: int, include_usage: bool
) -> list[dict[str, Any]]:
    """The chunks after the text: the tool calls (whole, with ``index``), the finish reason
    with the ``edged`` extension, and the usage chunk when the client asked for it."""
    out = []
    if result.tool_calls:
        calls = [{"index": i, **c} for i, c in enumerate(wire.encode_tool_calls(result.tool_calls))]
        out.append(chunk(result.id, model, created, {"tool_calls": calls}))
    last = chunk(result.id, model, created, {}, finish_reason(result.finish_reason))
    last[EXT] = extension(result)
    out.append(last)
    if include_usage:
        u = chunk(result.id, model, created, {})
        u["choices"] = []
        u["usage"] = _usage(result)
        out.append(u)
    return out


def now_s() -> int:
    """``created``: Unix seconds."""
    return int(time.time())


def parse_json_model(raw: bytes) -> str:
    """The ``model`` of a body :func:`parse_chat` accepted."""
    return str(json.loads(raw)["model"])


def include_usage(raw: bytes) -> bool:
    """``stream_options.include_usage`` of a body :func:`parse_chat` accepted."""
    opts = json.loads(raw).get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True
