"""The JSON Schema subset edged accepts for tool parameters and structured output
(docs/tools.md), and the check that refuses everything else.

A schema that uses a keyword outside the subset, is malformed, or is over a limit is
:class:`~edged.errors.BadRequest` whose message starts with the path of the problem from the
request root (``tools[3].function.parameters.properties.hour: unsupported JSON Schema
keyword "multipleOf"``). Nothing is silently ignored: the grammar engines and the validator
must agree on what a schema means, so a keyword neither enforces is refused, not dropped.

Pure code, no I/O; imports only types and errors.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from edged.errors import BadRequest
from edged.types import ToolSpec

#: ``type`` names the subset knows.
TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
#: Keywords that constrain values, each enforced by the grammar and the validator.
KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "items",
        "minItems",
        "maxItems",
        "anyOf",
    }
)
#: Keywords accepted and ignored (they constrain nothing).
ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment"})

#: Deepest nesting of schemas (the root is 1, each ``properties``/``items``/``anyOf`` step
#: one more).
MAX_SCHEMA_DEPTH = 8
#: Largest schema, bytes of its compact JSON (``ingress.max_schema_bytes`` overrides).
MAX_SCHEMA_BYTES = 8192
#: Most values in one ``enum``.
MAX_ENUM_VALUES = 128
#: Most ``properties`` in one object schema.
MAX_PROPERTIES = 64
#: Most branches in one ``anyOf``.
MAX_ANY_OF = 16
#: Most tools in one request (``ingress.max_tools`` overrides).
MAX_TOOLS = 32
#: A tool's name, as the OpenAI API allows it.
TOOL_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: What a tool without ``parameters`` takes: no arguments.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

#: Schemas that passed, by canonical JSON text (LRU): the metaschema check costs about 2 ms
#: per schema (jsonschema, x86-64), the walk and the key about 0.03 ms.
_ACCEPTED_KEPT = 128
_accepted: OrderedDict[str, None] = OrderedDict()

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_MESSAGE_CHARS = 160


def key_path(path: str, key: str) -> str:
    """``path`` extended by an object key: ``.key`` when it reads as a name, else
    ``["key"]`` (JSON-quoted, so control characters are escaped)."""
    if _IDENT.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def compact_bytes(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON of ``value`` (how schema sizes are counted)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))  # a lone surrogate counts, never raises


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_PATH_CHARS = 240


def _fail(path: str, message: str) -> BadRequest:
    if len(path) > _PATH_CHARS:  # long property names: keep both ends of the path
        half = _PATH_CHARS // 2
        path = f"{path[:half]}...{path[-half:]}"
    return BadRequest(f"{path}: {message}")


def _check_type(value: object, path: str) -> None:
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) for n in names):
        raise _fail(path, f"must be a type name or a non-empty list of them {list(TYPES)}")
    for n in names:
        if n not in TYPES:
            raise _fail(path, _short(f"unknown type {json.dumps(n)}; one of {list(TYPES)}"))
    if len(set(names)) != len(names):
        raise _fail(path, "lists a type twice")


def _check_bounds(schema: dict[str, Any], path: str) -> None:
    for kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if kw in schema and not _is_number(schema[kw]):
            raise _fail(key_path(path, kw), "must be a number")
    for kw in ("minLength", "maxLength", "minItems", "maxItems"):
        if kw in schema and not (_is_int(schema[kw]) and schema[kw] >= 0):
            raise _fail(key_path(path, kw), "must be a non-negative integer")
    # (bound, exclusive) below, (bound, inclusive) above: the tightest of each side
    low = max(
        (
            (schema[k], k == "exclusiveMinimum")
            for k in ("minimum", "exclusiveMinimum")
            if k in schema
        ),
        default=None,
    )
    high = min(
        (
            (schema[k], k != "exclusiveMaximum")
            for k in ("maximum", "exclusiveMaximum")
            if k in schema
        ),
        default=None,
    )
    if (
        low is not None
        and high is not None
        and (low[0] > high[0] or (low[0] == high[0] and (low[1] or not high[1])))
    ):
        raise _fail(path, "its bounds leave no number that fits")
    for lo, hi in (("minLength", "maxLength"), ("minItems", "maxItems")):
        if lo in schema and hi in schema and schema[lo] > schema[hi]:
            raise _fail(path, f"{lo} is above {hi}: nothing fits")


def _check_object(schema: dict[str, Any], path: str, depth: int) -> None:
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise _fail(key_path(path, "properties"), "must be an object of schemas")
    if len(props) > MAX_PROPERTIES:
        raise _fail(
            key_path(path, "properties"),
            f"{len(props)} properties; at most {MAX_PROPERTIES} in one object",
        )
    for name, sub in props.items():
        _walk(sub, key_path(key_path(path, "properties"), name), depth + 1)
    if "required" in schema:
        req = schema["required"]
        where = key_path(path, "required")
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise _fail(where, "must be a list of property names")
        if len(set(req)) != len(req):
            raise _fail(where, "names a property twice")
        for r in req:
            if r not in props:
                what = f"{json.dumps(r)} is not in properties (only declared ones are generated)"
                raise _fail(where, _short(what))
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        raise _fail(
            key_path(path, "additionalProperties"),
            "only true or false is supported, not a schema",
        )


def _walk(schema: object, path: str, depth: int) -> None:
    if isinstance(schema, bool):
        raise _fail(path, "a boolean schema (true/false) is not supported; write a schema object")
    if not isinstance(schema, dict):
        raise _fail(path, "a schema must be a JSON object")
    if depth > MAX_SCHEMA_DEPTH:
        raise _fail(path, f"schemas nest deeper than {MAX_SCHEMA_DEPTH} levels")
    for kw in schema:
        if kw not in KEYWORDS and kw not in ANNOTATIONS:
            raise _fail(path, _short(f"unsupported JSON Schema keyword {json.dumps(kw)}"))
    for kw in ("description", "title", "$comment"):
        if kw in schema and not isinstance(schema[kw], str):
            raise _fail(key_path(path, kw), "must be a string")
    if "examples" in schema and not isinstance(schema["examples"], list):
        raise _fail(key_path(path, "examples"), "must be a list")
    if "type" in schema:
        _check_type(schema["type"], key_path(path, "type"))
    if "enum" in schema:
        enum = schema["enum"]
        where = key_path(path, "enum")
        if not isinstance(enum, list) or not enum:
            raise _fail(where, "must be a non-empty list of values")
        if len(enum) > MAX_ENUM_VALUES:
            raise _fail(where, f"{len(enum)} values; at most {MAX_ENUM_VALUES}")
    _check_bounds(schema, path)
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        _check_object(schema, path, depth)
    if "items" in schema:
        _walk(schema["items"], key_path(path, "items"), depth + 1)
    if "anyOf" in schema:
        branches = schema["anyOf"]
        where = key_path(path, "anyOf")
        if not isinstance(branches, list) or not branches:
            raise _fail(where, "must be a non-empty list of schemas")
        if len(branches) > MAX_ANY_OF:
            raise _fail(where, f"{len(branches)} branches; at most {MAX_ANY_OF}")
        for i, sub in enumerate(branches):
            _walk(sub, f"{where}[{i}]", depth + 1)


def _schema_error_path(path: str, err: SchemaError) -> str:
    out = path
    for part in err.absolute_path:
        out = f"{out}[{part}]" if isinstance(part, int) else key_path(out, str(part))
    return out


def check_schema(schema: object, path: str, *, max_bytes: int = MAX_SCHEMA_BYTES) -> None:
    """Raise BadRequest, its message starting with the path of the first problem (``path``
    names ``schema`` itself), unless ``schema`` is a well-formed JSON Schema of the subset
    (docs/tools.md) within the limits: at most ``max_bytes`` of compact JSON, nesting,
    enum, properties and anyOf bounds (the ``MAX_*`` constants)."""
    if not isinstance(schema, dict):
        raise _fail(path, "a schema must be a JSON object")
    size = compact_bytes(schema)
    if size > max_bytes:
        raise _fail(path, f"the schema is {size} bytes of JSON; at most {max_bytes}")
    key = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if key in _accepted:  # a client sends the same tools with every request
        _accepted.move_to_end(key)
        return
    # the walk first: it refuses every keyword outside the subset (pattern, format, $ref...)
    # before anything else reads them, and checks the shape of what it descends into
    _walk(schema, path, 1)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:  # a backstop: the walk checks the shapes it supports
        raise _fail(
            _schema_error_path(path, e), _short(f"malformed JSON Schema: {e.message}")
        ) from None
    _accepted[key] = None
    if len(_accepted) > _ACCEPTED_KEPT:
        _accepted.popitem(last=False)


def check_parameters(schema: object, path: str, *, max_bytes: int = MAX_SCHEMA_BYTES) -> None:
    """:func:`check_schema`, and the schema must describe an object (``type: "object"``):
    a tool's arguments are always one JSON object."""
    check_schema(schema, path, max_bytes=max_bytes)
    assert isinstance(schema, dict)
    if schema.get("type") != "object":
        raise _fail(
            key_path(path, "type"),
            'a tool\'s parameters must be an object schema ("type": "object")',
        )


def check_tools(
    tools: Sequence[ToolSpec],
    path: str = "tools",
    *,
    max_tools: int = MAX_TOOLS,
    max_schema_bytes: int = MAX_SCHEMA_BYTES,
) -> None:
    """Raise BadRequest naming the first tool that may not be offered: more than
    ``max_tools``, a name outside ``^[A-Za-z0-9_-]{1,64}$`` or used twice, or parameters
    that are not an object schema of the subset (:func:`check_parameters`). ``path[i]``
    names tool i (its ``.function`` in the OpenAI shape)."""
    if not tools:
        raise _fail(path, "must list at least one tool (leave it out to offer none)")
    if len(tools) > max_tools:
        raise _fail(path, f"{len(tools)} tools; at most {max_tools} in one request")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"{path}[{i}].function"
        if not TOOL_NAME_RE.fullmatch(tool.name):
            raise _fail(f"{where}.name", "must be 1-64 characters of [A-Za-z0-9_-]")
        if tool.name in seen:
            raise _fail(f"{where}.name", f"tool {tool.name!r} is offered twice")
        seen.add(tool.name)
        check_parameters(tool.parameters, f"{where}.parameters", max_bytes=max_schema_bytes)
