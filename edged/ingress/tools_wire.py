"""Tool calling on the wire (docs/protocol.md, docs/tools.md): ``tools``, ``tool_choice``,
``response_format`` and the tool turns of ``messages``, in the OpenAI chat shapes, turned
into the Request's values.

Pure functions, no I/O. Every refusal is :class:`~edged.errors.BadRequest` whose message
starts with the path of the field (``tools[2].function.parameters.properties.hour: ...``,
``messages[3].tool_call_id: ...``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edged.config import IngressConfig
from edged.config_agent import ToolConfig
from edged.errors import BadRequest
from edged.tools.schema import (
    NO_PARAMETERS,
    TOOL_NAME_RE,
    check_schema,
    check_tools,
    compact_bytes,
    key_path,
)
from edged.tools.validate import parse_json
from edged.types import ChatMessage, ResponseFormat, ToolCall, ToolChoice, ToolSpec

#: A tool call's id: printable ASCII without spaces (OpenAI's ``call_...``, vLLM's
#: ``chatcmpl-tool-...``), 1-256 characters.
CALL_ID_PATTERN = r"^[\x21-\x7e]{1,256}$"
#: What ``tool_choice`` may say as a string.
_MODES = {
    "auto": ToolChoice("auto"),
    "none": ToolChoice("none"),
    "required": ToolChoice("required"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CallFunction(_Strict):
    """``tool_calls[i].function`` of an assistant turn."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    arguments: str


class CallBody(_Strict):
    """One call of an assistant turn, as the model made it (OpenAI shape)."""

    id: str = Field(pattern=CALL_ID_PATTERN)
    type: Literal["function"]
    function: CallFunction


class MessageBody(_Strict):
    """One turn of ``messages``: ``content`` may be null (or absent) only on an assistant
    turn with ``tool_calls``; a ``tool`` turn carries ``tool_call_id``."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field(None, max_length=1_000_000)
    tool_calls: list[CallBody] | None = None
    tool_call_id: str | None = Field(None, pattern=CALL_ID_PATTERN)

    @model_validator(mode="after")
    def _role_rules(self) -> MessageBody:
        if self.tool_calls is not None:
            if self.role != "assistant":
                raise ValueError("tool_calls: only an assistant turn makes calls")
            if not self.tool_calls:
                raise ValueError("tool_calls: must not be empty (leave it out)")
        if self.content is None and not self.tool_calls:
            raise ValueError("content: required (null only on an assistant turn with tool_calls)")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("tool_call_id: required on a tool turn")
        if self.role != "tool" and self.tool_call_id is not None:
            raise ValueError("tool_call_id: only a tool turn carries it")
        return self


# --- limits, on the parsed JSON before any field is validated --------------------------------


def _get(obj: object, *keys: str) -> object:
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def early_limits(data: dict[str, Any], cfg: IngressConfig) -> BadRequest | None:
    """The first limit ``data`` (the request object) is over, or None: the number of tools,
    each schema's size, the bytes of tool results. Cheap; runs before validation."""
    tools = data.get("tools")
    if isinstance(tools, list):
        if len(tools) > cfg.max_tools:
            return BadRequest(f"tools: {len(tools)} tools; at most {cfg.max_tools} in one request")
        for i, tool in enumerate(tools):
            params = _get(tool, "function", "parameters")
            if isinstance(params, dict) and compact_bytes(params) > cfg.max_schema_bytes:
                return BadRequest(
                    f"tools[{i}].function.parameters: the schema is {compact_bytes(params)} "
                    f"bytes of JSON; at most {cfg.max_schema_bytes}"
                )
    schema = _get(data.get("response_format"), "json_schema", "schema")
    if isinstance(schema, dict) and compact_bytes(schema) > cfg.max_schema_bytes:
        return BadRequest(
            f"response_format.json_schema.schema: the schema is {compact_bytes(schema)} bytes "
            f"of JSON; at most {cfg.max_schema_bytes}"
        )
    messages = data.get("messages")
    if isinstance(messages, list):
        total = sum(
            len(m["content"].encode("utf-8"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "tool" and isinstance(m.get("content"), str)
        )
        if total > cfg.max_tool_result_bytes:
            return BadRequest(
                f"messages: the tool results are {total} bytes together; at most "
                f"{cfg.max_tool_result_bytes}"
            )
    return None


# --- tools, tool_choice, response_format ------------------------------------------------------


def _fields(
    value: object, path: str, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, Any]:
    """``value`` as an object with exactly these keys (``optional`` ones may be missing)."""
    if not isinstance(value, dict):
        raise BadRequest(f"{path}: must be an object")
    for k in value:
        if k not in required and k not in optional:
            raise BadRequest(f"{key_path(path, k)}: unknown field")
    for k in required:
        if k not in value:
            raise BadRequest(f"{key_path(path, k)}: required")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{path}: must be a string")
    return value


def _literal(value: object, path: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise BadRequest(f"{path}: must be one of {list(allowed)}")
    return value


def parse_tools(value: object, cfg: IngressConfig) -> tuple[ToolSpec, ...]:
    """``tools`` (a list of ``{"type": "function", "function": {...}}``) as ToolSpecs,
    each schema checked against the subset; a missing ``parameters`` takes no arguments."""
    if not isinstance(value, list):
        raise BadRequest("tools: must be a list of tools")
    if len(value) > cfg.max_tools:
        raise BadRequest(f"tools: {len(value)} tools; at most {cfg.max_tools} in one request")
    specs: list[ToolSpec] = []
    for i, item in enumerate(value):
        where = f"tools[{i}]"
        tool = _fields(item, where, ("type", "function"))
        _literal(tool["type"], f"{where}.type", ("function",))
        fn = _fields(
            tool["function"],
            f"{where}.function",
            ("name",),
            ("description", "parameters", "strict"),
        )
        name = _string(fn["name"], f"{where}.function.name")
        description = fn.get("description")
        if description is not None:
            _string(description, f"{where}.function.description")
        strict = fn.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise BadRequest(f"{where}.function.strict: must be a boolean")
        params = fn.get("parameters")
        if params is None:
            params = json.loads(json.dumps(NO_PARAMETERS))  # a copy of its own
        specs.append(ToolSpec(name, description or "", params))
    check_tools(specs, "tools", max_tools=cfg.max_tools, max_schema_bytes=cfg.max_schema_bytes)
    return tuple(specs)


def offer_device_tools(
    tools: tuple[ToolSpec, ...],
    names: Sequence[str] | None,
    device: dict[str, ToolConfig],
    cfg: IngressConfig,
) -> tuple[tuple[ToolSpec, ...], tuple[str, ...]]:
    """``tools`` with the device tools ``names`` (``[tools.NAME]``) offered beside them, and
    those names: each must be a device tool, named once, not also a client tool."""
    if not names:
        return tools, ()
    client = {t.name for t in tools}
    specs = list(tools)
    for i, name in enumerate(names):
        where = f"device_tools[{i}]"
        tool = device.get(name)
        if tool is None:
            raise BadRequest(
                f"{where}: {json.dumps(name)[:80]} is not a device tool of this device "
                f"({sorted(device)})"
            )
        if name in client:
            raise BadRequest(f"{where}: {name!r} is also a client tool in tools")
        if name in names[:i]:
            raise BadRequest(f"{where}: {name!r} is named twice")
        specs.append(ToolSpec(name, tool.description, tool.parameters))
    if len(specs) > cfg.max_tools:
        raise BadRequest(f"tools and device_tools: {len(specs)} tools; at most {cfg.max_tools}")
    return tuple(specs), tuple(names)


def parse_tool_choice(value: object, tools: Sequence[ToolSpec]) -> ToolChoice | None:
    """``tool_choice`` as a ToolChoice: ``"auto"`` when tools are offered and it is absent,
    None exactly when no tools are."""
    if value is None:
        return ToolChoice("auto") if tools else None
    if not tools:
        raise BadRequest("tool_choice: given without tools (offer tools, or leave it out)")
    if isinstance(value, str):
        if value not in _MODES:
            raise BadRequest(
                f"tool_choice: must be one of {list(_MODES)} or "
                '{"type": "function", "function": {"name": ...}}'
            )
        return _MODES[value]
    choice = _fields(value, "tool_choice", ("type", "function"))
    _literal(choice["type"], "tool_choice.type", ("function",))
    fn = _fields(choice["function"], "tool_choice.function", ("name",))
    name = _string(fn["name"], "tool_choice.function.name")
    names = [t.name for t in tools]
    if name not in names:
        raise BadRequest(
            f"tool_choice.function.name: {json.dumps(name)[:80]} is not one of the tools {names}"
        )
    return ToolChoice("function", name)


def parse_response_format(value: object, cfg: IngressConfig) -> ResponseFormat | None:
    """``response_format`` as a ResponseFormat; None for plain text (absent, or
    ``{"type": "text"}``)."""
    if value is None:
        return None
    if not isinstance(value, dict) or "type" not in value:
        raise BadRequest('response_format: must be an object with a "type"')
    kind = _literal(value["type"], "response_format.type", ("text", "json_object", "json_schema"))
    if kind == "text":
        _fields(value, "response_format", ("type",))
        return None
    if kind == "json_object":
        _fields(value, "response_format", ("type",))
        return ResponseFormat("json_object")
    where = "response_format.json_schema"
    _fields(value, "response_format", ("type", "json_schema"))
    spec = _fields(value["json_schema"], where, ("name", "schema"), ("description", "strict"))
    name = _string(spec["name"], f"{where}.name")
    if not TOOL_NAME_RE.fullmatch(name):
        raise BadRequest(f"{where}.name: must be 1-64 characters of [A-Za-z0-9_-]")
    if spec.get("description") is not None:
        _string(spec["description"], f"{where}.description")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise BadRequest(f"{where}.strict: must be a boolean")
    schema = spec["schema"]
    check_schema(schema, f"{where}.schema", max_bytes=cfg.max_schema_bytes)
    return ResponseFormat("json_schema", name, schema, True if strict is None else strict)


# --- the conversation --------------------------------------------------------------------------


def _is_json_object(text: str) -> bool:
    """True when ``text`` is strict JSON (no NaN, no duplicate keys) of one object."""
    try:
        value = parse_json(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict)


def _unowed(call_id: str, seen: set[str], answered: set[str], owed: Sequence[str]) -> str:
    """Why a tool turn's ``tool_call_id`` answers no open call."""
    quoted = json.dumps(call_id)[:80]
    if call_id in answered:
        why = f"call {quoted} is answered twice"
    elif call_id in seen:
        why = (
            f"call {quoted} belongs to an earlier assistant turn (tool turns answer the "
            "assistant turn right before them)"
        )
    else:
        why = f"{quoted} matches no call of an earlier assistant turn"
    return f"{why}; open calls: {_ids(owed)}" if owed else why


def _ids(ids: Sequence[str]) -> str:
    return ", ".join(json.dumps(i)[:80] for i in ids[:5]) + (" ..." if len(ids) > 5 else "")


def conversation(messages: Sequence[MessageBody]) -> tuple[ChatMessage, ...]:
    """The validated turns as ChatMessages. Tool turns answer the calls of the assistant
    turn right before them (other tool turns may come between), each call exactly once,
    all before the next turn that is not a tool turn (the OpenAI chat rule); call ids are
    unique in the conversation and ``arguments`` are the JSON text of an object."""
    out: list[ChatMessage] = []
    seen: set[str] = set()  # every call id so far
    answered: set[str] = set()
    owed: dict[str, None] = {}  # calls of the open assistant turn not answered yet, in order
    opened = -1  # index of that assistant turn
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.role != "tool" and owed:
            raise BadRequest(
                f"messages[{opened}].tool_calls: no tool turn answers {_ids(list(owed))} "
                "(each call needs one, right after the assistant turn)"
            )
        calls: list[ToolCall] = []
        if m.role == "tool":
            call_id = m.tool_call_id
            assert call_id is not None
            if call_id not in owed:
                raise BadRequest(
                    f"{where}.tool_call_id: {_unowed(call_id, seen, answered, list(owed))}"
                )
            del owed[call_id]
            answered.add(call_id)
        elif m.tool_calls:
            opened = i
            for j, c in enumerate(m.tool_calls):
                cwhere = f"{where}.tool_calls[{j}]"
                if c.id in seen:
                    raise BadRequest(f"{cwhere}.id: {json.dumps(c.id)} is used by an earlier call")
                if not _is_json_object(c.function.arguments):
                    raise BadRequest(
                        f"{cwhere}.function.arguments: must be the JSON text of an object"
                    )
                seen.add(c.id)
                owed[c.id] = None
                calls.append(ToolCall(c.id, c.function.name, c.function.arguments))
        out.append(ChatMessage(m.role, m.content or "", tuple(calls), m.tool_call_id))
    if owed:
        raise BadRequest(
            f"messages[{opened}].tool_calls: no tool turn answers {_ids(list(owed))} "
            "(each call needs one, right after the assistant turn)"
        )
    if not any(m.role == "user" for m in out):
        raise BadRequest("messages: at least one turn must have role 'user'")
    return tuple(out)
