"""The one check a tool call or a structured answer passes before it leaves the device.

Whatever produced it (the local model under a grammar, or a remote backend that may send
anything), a call is released only when its tool is one the request offered, ``tool_choice``
allows it, and its ``arguments`` are the JSON text of one object that validates against the
tool's ``parameters``. A structured answer (``response_format``) is released only when its
text is JSON that validates. Anything else is :class:`~edged.errors.ToolCallInvalid`, whose
message names the tool and the JSON path of the first problem.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator

from edged.errors import ToolCallInvalid
from edged.types import Request, ToolCall

#: Most calls one turn may make.
MAX_CALLS_PER_TURN = 16
#: Compiled validators kept (one per distinct schema).
_KEPT = 64
_validators: OrderedDict[str, Draft202012Validator] = OrderedDict()


def canonical(obj: Any) -> str:
    """The canonical JSON text of ``obj`` (sorted keys, no spaces): the cache key of a
    schema, here and in the grammar caches."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for ``schema`` (cached; the schema was checked at intake)."""
    key = canonical(schema)
    v = _validators.get(key)
    if v is None:
        v = Draft202012Validator(schema)
        _validators[key] = v
        if len(_validators) > _KEPT:
            _validators.popitem(last=False)
    else:
        _validators.move_to_end(key)
    return v


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def parse_json(text: str) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys; ValueError otherwise."""
    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def first_problem(schema: dict[str, Any], value: Any) -> str | None:
    """The first way ``value`` breaks ``schema`` (``path: message``), or None."""
    errors = sorted(validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    e = errors[0]
    return f"{_path(list(e.absolute_path))}: {e.message}"


def validate_calls(request: Request, calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
    """``calls`` if each may be released (a call without an id gets one); raises
    ToolCallInvalid naming the first call that may not."""
    choice = request.tool_choice
    if not request.tools or choice is None or choice.mode == "none":
        raise ToolCallInvalid("the backend called a tool, but the request offered none it may call")
    if not calls:
        raise ToolCallInvalid("the backend ended the turn with tool calls, but sent none")
    if len(calls) > MAX_CALLS_PER_TURN:
        raise ToolCallInvalid(f"the backend made {len(calls)} calls; at most {MAX_CALLS_PER_TURN}")
    tools = {t.name: t for t in request.tools}
    out: list[ToolCall] = []
    seen_ids: set[str] = set()
    for i, call in enumerate(calls):
        where = f"tool_calls[{i}]"
        tool = tools.get(call.name)
        if tool is None:
            raise ToolCallInvalid(
                f"{where}: unknown tool {call.name!r}; the request offered {sorted(tools)}"
            )
        if choice.mode == "function" and call.name != choice.name:
            raise ToolCallInvalid(
                f"{where}: tool_choice named {choice.name!r}, the backend called {call.name!r}"
            )
        try:
            args = parse_json(call.arguments)
        except (ValueError, RecursionError) as e:
            raise ToolCallInvalid(
                f"{where} ({call.name}): arguments are not valid JSON: {e}"
            ) from None
        if not isinstance(args, dict):
            raise ToolCallInvalid(f"{where} ({call.name}): arguments must be a JSON object")
        problem = first_problem(tool.parameters, args)
        if problem is not None:
            raise ToolCallInvalid(f"{where} ({call.name}): arguments.{problem}")
        call_id = call.id or f"call_{uuid.uuid4().hex[:24]}"
        if call_id in seen_ids:
            raise ToolCallInvalid(f"{where} ({call.name}): id {call_id!r} is used twice")
        seen_ids.add(call_id)
        out.append(call if call_id == call.id else ToolCall(call_id, call.name, call.arguments))
    return tuple(out)


def check_no_call_owed(request: Request) -> None:
    """Raise when ``tool_choice`` required a call and the turn ended without one."""
    choice = request.tool_choice
    if request.tools and choice is not None and choice.mode in ("required", "function"):
        what = "a tool call" if choice.mode == "required" else f"a call of {choice.name!r}"
        raise ToolCallInvalid(f"tool_choice required {what}; the backend answered in text")


def validate_text(request: Request, text: str) -> None:
    """Raise when ``text`` breaks the request's ``response_format``."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return
    try:
        value = parse_json(text)
    except (ValueError, RecursionError) as e:
        raise ToolCallInvalid(f"response_format {fmt.type}: the answer is not JSON: {e}") from None
    if fmt.type == "json_object":
        if not isinstance(value, dict):
            raise ToolCallInvalid("response_format json_object: the answer is not a JSON object")
        return
    assert fmt.schema is not None
    problem = first_problem(fmt.schema, value)
    if problem is not None:
        raise ToolCallInvalid(f"response_format json_schema {fmt.name!r}: {problem}")
