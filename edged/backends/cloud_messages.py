"""Translation between edged's request/answer values and the OpenAI chat-completions shapes,
for the cloud backend (:mod:`edged.backends.cloud`). Pure code: no I/O, no SDK import.

Out (the request body):

- :func:`messages`: each turn in the OpenAI shape. An assistant turn with ``tool_calls``
  sends them as ``[{"id", "type": "function", "function": {"name", "arguments"}}]`` with
  ``content`` null when it is ``""``; a ``tool`` turn sends ``tool_call_id`` and ``content``.
- :func:`tool_params`: ``tools``, ``tool_choice`` and ``response_format``, passed through in
  the OpenAI shapes, each only when the request has it.

In (the answer):

- :func:`turn_end`: what a stream's ``finish_reason`` and its assembled calls mean.
  ``tool_calls``, or ``stop`` with calls present (some servers say ``stop``), end the turn in
  calls; anything else with calls present (``length``: cut at ``max_tokens`` in the middle of
  a call) or ``tool_calls`` with none is :class:`~edged.errors.ToolCallInvalid`.
- :func:`completion`: a non-streamed answer (a server that ignored ``stream: true`` and sent
  one ``chat.completion`` JSON object), read into the same parts a stream gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edged.backends.failures import BadStream
from edged.errors import ToolCallInvalid
from edged.types import (
    FinishReason,
    Request,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)

#: A JSON object in the OpenAI shapes.
JsonObject = dict[str, Any]

#: The finish reasons that end a turn in tool calls when calls are present.
CALL_REASONS = frozenset({"tool_calls", "stop"})


# --- out: the request body ---------------------------------------------------------------------


def _call(call: ToolCall) -> JsonObject:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def messages(request: Request) -> list[JsonObject]:
    """The request's turns as OpenAI chat messages."""
    out: list[JsonObject] = []
    for m in request.messages:
        if m.role == "assistant":
            msg: JsonObject = {"role": "assistant", "content": m.content}
            if m.tool_calls:
                msg["content"] = m.content or None
                msg["tool_calls"] = [_call(c) for c in m.tool_calls]
            out.append(msg)
        elif m.role == "tool":
            msg = {"role": "tool", "content": m.content}
            if m.tool_call_id is not None:
                msg["tool_call_id"] = m.tool_call_id
            out.append(msg)
        elif m.role == "system":
            out.append({"role": "system", "content": m.content})
        else:
            out.append({"role": "user", "content": m.content})
    return out


def tool(spec: ToolSpec) -> JsonObject:
    """One tool in the OpenAI shape (no ``description`` when it is empty)."""
    function: JsonObject = {"name": spec.name}
    if spec.description:
        function["description"] = spec.description
    function["parameters"] = spec.parameters
    return {"type": "function", "function": function}


def tool_choice(choice: ToolChoice) -> str | JsonObject:
    """``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", ...}``."""
    if choice.mode == "function":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def response_format(fmt: ResponseFormat) -> JsonObject:
    """``{"type": "text" | "json_object"}`` or ``{"type": "json_schema", "json_schema":
    {"name", "schema", "strict"}}`` (name ``response`` when the request gave none)."""
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    return {
        "type": "json_schema",
        "json_schema": {"name": fmt.name or "response", "schema": fmt.schema, "strict": fmt.strict},
    }


def tool_params(request: Request) -> JsonObject:
    """The body fields for tools and structured output; empty when the request has none."""
    out: JsonObject = {}
    if request.tools:
        out["tools"] = [tool(t) for t in request.tools]
        if request.tool_choice is not None:
            out["tool_choice"] = tool_choice(request.tool_choice)
    if request.response_format is not None:
        out["response_format"] = response_format(request.response_format)
    return out


# --- in: the answer ----------------------------------------------------------------------------


def turn_end(finish: str, calls: tuple[ToolCall, ...]) -> FinishReason:
    """What the turn's ``finish_reason`` means, given the calls assembled; raises
    ToolCallInvalid when the two disagree (nothing is released then)."""
    if calls:
        if finish in CALL_REASONS:
            return "tool_calls"
        if finish == "length":
            raise ToolCallInvalid(
                "the backend stopped at max_tokens (finish_reason length) with its tool "
                "calls possibly cut; none was released"
            )
        raise ToolCallInvalid(
            f"the backend sent tool calls but ended the turn with finish_reason "
            f"{finish[:40]!r}; none was released"
        )
    if finish == "tool_calls":
        raise ToolCallInvalid("the backend ended the turn with tool_calls but sent no call")
    return "length" if finish == "length" else "stop"


@dataclass(frozen=True, slots=True)
class Completion:
    """The parts of a non-streamed answer: its text, its ``tool_calls`` (fragments for the
    assembler, each with its ``index``), ``finish_reason`` and usage (None: not sent)."""

    text: str
    tool_calls: list[Any]
    finish_reason: str | None
    usage: Usage | None


def completion(data: Any) -> Completion:
    """A ``chat.completion`` object's choice 0, read without trusting its types; raises
    BadStream when it is not one."""
    try:
        choice = next(c for c in data["choices"] if c.get("index", 0) == 0)
        message = choice["message"]
        text = message.get("content") or ""
        calls = message.get("tool_calls") or []
        finish = choice.get("finish_reason")
        raw_usage = data.get("usage")
        usage = None
        if raw_usage:
            usage = Usage(
                prompt_tokens=int(raw_usage["prompt_tokens"]),
                completion_tokens=int(raw_usage["completion_tokens"]),
            )
        if (
            not isinstance(text, str)
            or not isinstance(calls, list)
            or not (finish is None or isinstance(finish, str))
        ):
            raise TypeError
    except (AttributeError, KeyError, TypeError, ValueError, StopIteration):
        raise BadStream("malformed response") from None
    # a whole message's calls carry no index: their place in the list is their index
    fragments = [
        {**c, "index": i} if isinstance(c, dict) and "index" not in c else c
        for i, c in enumerate(calls)
    ]
    return Completion(text, fragments, finish, usage)
