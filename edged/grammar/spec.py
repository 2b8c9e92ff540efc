"""What a request asks the decoder to hold its output to, as a grammar spec.

A request's ``tools``, ``tool_choice`` and ``response_format`` map onto one of:

- no constraint (plain text; also ``tool_choice: none``, whose tools are not offered);
- ``lazy``: free text until the model writes the call's opening marker, then a valid call
  (``tool_choice: auto``);
- forced from the first token: a call (``required``, or one named function), a JSON answer
  (``response_format`` json_object / json_schema), or either (``auto`` with a JSON format).

A call is the format's opening marker, the call object, and its closing marker; the call
object of a tools set is ``anyOf`` of ``{"name": {"const": tool}, "arguments": <parameters>}``,
so the name selects the arguments' schema by construction. :class:`GrammarSpec` is the
compiled grammar's identity: its :attr:`~GrammarSpec.key` (canonical JSON) keys the caches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from edged.errors import BadRequest
from edged.tools.validate import canonical
from edged.types import Request, ToolSpec

#: Compact JSON for the model to write: no optional whitespace anywhere.
_COMPACT = {"whitespace_flexible": False}


def closed(schema: Any) -> Any:
    """``schema`` for generation: an object that declares ``properties`` (even none: a tool
    without parameters) and says nothing of ``additionalProperties`` gets ``false`` (writing
    only the declared keys still validates; a tiny model left free invents keys), in every
    nested schema. An object without ``properties`` stays open."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) if k in ("items", "anyOf") else v for k, v in schema.items()}
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: closed(v) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    return out


def call_object_schema(tool: ToolSpec) -> dict[str, Any]:
    """The JSON Schema of one whole call of ``tool`` (its parameters :func:`closed`)."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": closed(tool.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A grammar: a call (``call`` set: the call object's schema between ``call_open`` and
    ``call_close``), a JSON answer (``answer`` set: its schema), or either."""

    call: dict[str, Any] | None = None
    call_open: str = ""
    call_close: str = ""
    answer: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """Canonical JSON of everything that defines the grammar (the cache key)."""
        parts = {"call": self.call, "open": self.call_open, "close": self.call_close}
        return canonical({**parts, "answer": self.answer})

    def lark(self) -> str:
        """The grammar in llguidance's Lark dialect (JSON parts as ``%json`` schemas)."""
        alts: list[str] = []
        lines: list[str] = []
        if self.call is not None:
            alts.append("call")
            lines.append(f"call: {_lit(self.call_open)} call_json {_lit(self.call_close)}")
            lines.append(f"call_json: %json {json.dumps(_compact(self.call))}")
        if self.answer is not None:
            alts.append("answer")
            lines.append(f"answer: %json {json.dumps(_compact(self.answer))}")
        return "\n".join([f"start: {' | '.join(alts)}", *lines]) + "\n"


def _lit(text: str) -> str:
    # Lark string literals take JSON's escapes.
    return json.dumps(text, ensure_ascii=False)


def _compact(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "x-guidance": _COMPACT}


@dataclass(frozen=True, slots=True)
class Plan:
    """How one request is decoded: ``offer_tools`` (the tools go into the prompt),
    ``grammar`` (None: unconstrained) and ``mode``."""

    offer_tools: bool
    grammar: GrammarSpec | None
    #: ``text``: no constraint; ``lazy``: free text until the call marker; ``forced``:
    #: constrained from the first token.
    mode: Literal["text", "lazy", "forced"]


TEXT = Plan(offer_tools=False, grammar=None, mode="text")


def plan_for(request: Request, call_open: str, call_close: str) -> Plan:
    """The plan for ``request`` whose calls are written ``call_open`` JSON ``call_close``.
    A combination that cannot be served is BadRequest (the message names the field)."""
    tools, choice, fmt = request.tools, request.tool_choice, request.response_format
    if tools and choice is None:
        raise BadRequest("tools given without tool_choice")
    if choice is not None and not tools:
        raise BadRequest(f"tool_choice {choice.mode!r} given without tools")
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise BadRequest(f"tools: a name is used twice in {names}")
    answer: dict[str, Any] | None = None
    if fmt is not None and fmt.type == "json_object":
        answer = {"type": "object"}
    elif fmt is not None and fmt.type == "json_schema":
        if not isinstance(fmt.schema, dict):
            raise BadRequest("response_format json_schema: schema must be a JSON object")
        answer = closed(fmt.schema)
    if choice is None or choice.mode == "none":
        if answer is None:
            return TEXT
        return Plan(offer_tools=False, grammar=GrammarSpec(answer=answer), mode="forced")
    chosen = tools
    if choice.mode == "function":
        chosen = tuple(t for t in tools if t.name == choice.name)
        if not chosen:
            raise BadRequest(f"tool_choice names {choice.name!r}, which is not in tools {names}")
    objects = [call_object_schema(t) for t in chosen]
    call = objects[0] if len(objects) == 1 else {"anyOf": objects}
    if choice.mode == "auto":
        if answer is not None:  # the answer is JSON either way: a call, or the JSON answer
            spec = GrammarSpec(call, call_open, call_close, answer)
            return Plan(offer_tools=True, grammar=spec, mode="forced")
        return Plan(True, GrammarSpec(call, call_open, call_close), mode="lazy")
    return Plan(True, GrammarSpec(call, call_open, call_close), mode="forced")
