"""edged/tools/schema.py: the JSON Schema subset (docs/tools.md) is accepted, everything else
is refused with a message that starts with the path of the problem."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from edged.errors import BadRequest
from edged.tools import schema as ts
from edged.types import ToolSpec
from tests.tool_strategies import names, subset_schemas

P = "tools[0].function.parameters"


def refusal(schema: object, path: str = P, **kw: Any) -> str:
    with pytest.raises(BadRequest) as e:
        ts.check_schema(schema, path, **kw)
    assert e.value.code == "bad_request"
    return e.value.message


ACCEPTED: list[dict[str, Any]] = [
    {"type": "object", "properties": {}},
    {
        "type": "object",
        "title": "set_alarm",
        "description": "Set an alarm.",
        "$comment": "hours are 24h",
        "properties": {
            "hour": {"type": "integer", "minimum": 0, "maximum": 23, "description": "hour"},
            "minute": {"type": "integer", "exclusiveMinimum": -1, "exclusiveMaximum": 60},
            "label": {"type": ["string", "null"], "maxLength": 24, "minLength": 0},
            "days": {
                "type": "array",
                "items": {"enum": ["mon", "tue", "wed"]},
                "minItems": 0,
                "maxItems": 3,
            },
            "kind": {"const": "alarm", "default": "alarm", "examples": ["alarm"]},
            "volume": {"type": "number", "minimum": 0.5, "maximum": 10},
            "loud": {"type": "boolean"},
            "nothing": {"type": "null"},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "required": ["hour", "minute"],
        "additionalProperties": False,
    },
    {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": True},
    {"enum": [1, "a", None, [1], {"k": "v"}]},
    {"type": "integer", "minimum": 5, "maximum": 5},
    {"type": "string", "minLength": 3, "maxLength": 3},
    {"anyOf": [{"type": "object", "properties": {"a b": {"type": "string"}}}]},
]


@pytest.mark.parametrize("schema", ACCEPTED)
def test_the_subset_is_accepted(schema: dict[str, Any]) -> None:
    ts.check_schema(schema, P)
    Draft202012Validator.check_schema(schema)


# (schema, the message it gets, exactly)
REFUSED: list[tuple[object, str]] = [
    (
        {"type": "object", "properties": {"hour": {"type": "integer", "multipleOf": 1}}},
        f'{P}.properties.hour: unsupported JSON Schema keyword "multipleOf"',
    ),
    ({"type": "string", "pattern": "^a"}, f'{P}: unsupported JSON Schema keyword "pattern"'),
    ({"type": "string", "format": "date"}, f'{P}: unsupported JSON Schema keyword "format"'),
    ({"$ref": "#/$defs/a", "$defs": {}}, f'{P}: unsupported JSON Schema keyword "$ref"'),
    ({"$schema": "x"}, f'{P}: unsupported JSON Schema keyword "$schema"'),
    ({"oneOf": [{"type": "string"}]}, f'{P}: unsupported JSON Schema keyword "oneOf"'),
    ({"allOf": [{"type": "string"}]}, f'{P}: unsupported JSON Schema keyword "allOf"'),
    ({"not": {"type": "string"}}, f'{P}: unsupported JSON Schema keyword "not"'),
    ({"if": {}, "then": {}}, f'{P}: unsupported JSON Schema keyword "if"'),
    ({"type": "array", "uniqueItems": True}, f'{P}: unsupported JSON Schema keyword "uniqueItems"'),
    ({"type": "array", "prefixItems": []}, f'{P}: unsupported JSON Schema keyword "prefixItems"'),
    ({"type": "array", "contains": {}}, f'{P}: unsupported JSON Schema keyword "contains"'),
    ({"patternProperties": {}}, f'{P}: unsupported JSON Schema keyword "patternProperties"'),
    ({"propertyNames": {}}, f'{P}: unsupported JSON Schema keyword "propertyNames"'),
    ({"dependentRequired": {}}, f'{P}: unsupported JSON Schema keyword "dependentRequired"'),
    ({"colour": "red"}, f'{P}: unsupported JSON Schema keyword "colour"'),
    (
        {"type": "object", "properties": {"a.b": {"type": "string", "pattern": "x"}}},
        f'{P}.properties["a.b"]: unsupported JSON Schema keyword "pattern"',
    ),
    (
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "int"}]}},
        f'{P}.items.anyOf[1].type: unknown type "int"; one of {list(ts.TYPES)}',
    ),
    ({"type": 5}, f"{P}.type: must be a type name or a non-empty list of them {list(ts.TYPES)}"),
    ({"type": []}, f"{P}.type: must be a type name or a non-empty list of them {list(ts.TYPES)}"),
    ({"type": ["string", "string"]}, f"{P}.type: lists a type twice"),
    ([], f"{P}: a schema must be a JSON object"),
    ("object", f"{P}: a schema must be a JSON object"),
    (
        {"type": "object", "properties": {"x": True}},
        f"{P}.properties.x: a boolean schema (true/false) is not supported; write a schema object",
    ),
    ({"type": "object", "properties": []}, f"{P}.properties: must be an object of schemas"),
    ({"type": "object", "required": "x"}, f"{P}.required: must be a list of property names"),
    (
        {"type": "object", "properties": {"x": {}}, "required": ["x", "x"]},
        f"{P}.required: names a property twice",
    ),
    (
        {"type": "object", "properties": {}, "required": ["x"]},
        f'{P}.required: "x" is not in properties (only declared ones are generated)',
    ),
    (
        {"type": "object", "additionalProperties": {"type": "string"}},
        f"{P}.additionalProperties: only true or false is supported, not a schema",
    ),
    ({"enum": []}, f"{P}.enum: must be a non-empty list of values"),
    ({"enum": "a"}, f"{P}.enum: must be a non-empty list of values"),
    ({"type": "integer", "minimum": "0"}, f"{P}.minimum: must be a number"),
    ({"type": "integer", "maximum": True}, f"{P}.maximum: must be a number"),
    ({"type": "string", "maxLength": -1}, f"{P}.maxLength: must be a non-negative integer"),
    ({"type": "string", "minLength": 1.0}, f"{P}.minLength: must be a non-negative integer"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, f"{P}: its bounds leave no number that fits"),
    (
        {"type": "integer", "exclusiveMinimum": 5, "maximum": 5},
        f"{P}: its bounds leave no number that fits",
    ),
    (
        {"type": "integer", "minimum": 5, "exclusiveMaximum": 5},
        f"{P}: its bounds leave no number that fits",
    ),
    (
        {"type": "string", "minLength": 3, "maxLength": 2},
        f"{P}: minLength is above maxLength: nothing fits",
    ),
    (
        {"type": "array", "minItems": 3, "maxItems": 2},
        f"{P}: minItems is above maxItems: nothing fits",
    ),
    ({"anyOf": []}, f"{P}.anyOf: must be a non-empty list of schemas"),
    ({"anyOf": {"type": "string"}}, f"{P}.anyOf: must be a non-empty list of schemas"),
    ({"description": 5}, f"{P}.description: must be a string"),
    ({"examples": "a"}, f"{P}.examples: must be a list"),
    (
        {"type": "array", "items": [{"type": "string"}]},
        f"{P}.items: a schema must be a JSON object",
    ),
]


@pytest.mark.parametrize("schema,message", REFUSED, ids=[m for _, m in REFUSED])
def test_everything_else_is_refused_naming_the_path(schema: object, message: str) -> None:
    assert refusal(schema) == message


def test_a_keyword_that_would_hide_in_a_control_character_is_escaped() -> None:
    msg = refusal({"properties": {"a\nb": {"x\u0000": 1}}})
    assert msg == f'{P}.properties["a\\nb"]: unsupported JSON Schema keyword "x\\u0000"'


def test_a_long_path_is_shortened_in_the_middle() -> None:
    name = "n" * 5000
    msg = refusal({"type": "object", "properties": {name: {"pattern": "x"}}})
    assert len(msg) < 400
    assert msg.startswith(f"{P}.properties.nnn") and msg.endswith(
        'nnn: unsupported JSON Schema keyword "pattern"'
    )
    assert "..." in msg


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


def test_limits_each_with_its_own_message() -> None:
    ts.check_schema(nested(ts.MAX_SCHEMA_DEPTH), P)
    too_deep = refusal(nested(ts.MAX_SCHEMA_DEPTH + 1))
    assert too_deep == f"{P}{'.items' * ts.MAX_SCHEMA_DEPTH}: schemas nest deeper than 8 levels"
    many = {"enum": list(range(ts.MAX_ENUM_VALUES + 1))}
    assert refusal(many) == f"{P}.enum: {ts.MAX_ENUM_VALUES + 1} values; at most 128"
    props = {f"p{i}": {"type": "string"} for i in range(ts.MAX_PROPERTIES + 1)}
    assert refusal({"type": "object", "properties": props}) == (
        f"{P}.properties: 65 properties; at most 64 in one object"
    )
    branches = {"anyOf": [{"type": "string"}] * (ts.MAX_ANY_OF + 1)}
    assert refusal(branches) == f"{P}.anyOf: 17 branches; at most 16"
    big = {"type": "string", "description": "x" * 300}
    assert refusal(big, max_bytes=256).startswith(f"{P}: the schema is ")
    assert "bytes of JSON; at most 256" in refusal(big, max_bytes=256)
    ts.check_schema(big, P, max_bytes=ts.compact_bytes(big))


def test_parameters_must_be_an_object_schema() -> None:
    ts.check_parameters({"type": "object"}, P)
    for bad in ({"type": "string"}, {"properties": {}}, {"type": ["object", "null"]}):
        with pytest.raises(BadRequest) as e:
            ts.check_parameters(bad, P)
        assert e.value.message.startswith(f"{P}.type: a tool's parameters must be an object")


def tool(name: str, parameters: dict[str, Any] | None = None) -> ToolSpec:
    return ToolSpec(name, "", parameters or {"type": "object", "properties": {}})


def test_check_tools_names_count_and_schemas() -> None:
    ts.check_tools([tool("set_alarm"), tool("get-time"), tool("A" * 64)])

    def why(tools: list[ToolSpec], **kw: Any) -> str:
        with pytest.raises(BadRequest) as e:
            ts.check_tools(tools, **kw)
        return e.value.message

    assert why([]) == "tools: must list at least one tool (leave it out to offer none)"
    assert why([tool("a"), tool("b"), tool("c")], max_tools=2) == (
        "tools: 3 tools; at most 2 in one request"
    )
    for bad in ("", "a b", "a.b", "A" * 65, "é", "a\n"):
        assert why([tool(bad)]) == (
            "tools[0].function.name: must be 1-64 characters of [A-Za-z0-9_-]"
        )
    assert why([tool("a"), tool("a")]) == "tools[1].function.name: tool 'a' is offered twice"
    assert why([tool("a"), tool("b", {"type": "object", "x": 1})]) == (
        'tools[1].function.parameters: unsupported JSON Schema keyword "x"'
    )


# --- generated schemas -----------------------------------------------------------------------


def subschemas(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every schema inside ``schema`` (itself included) with its path."""
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out += subschemas(sub, ts.key_path(ts.key_path(path, "properties"), name))
    if "items" in schema:
        out += subschemas(schema["items"], f"{path}.items")
    for i, sub in enumerate(schema.get("anyOf", [])):
        out += subschemas(sub, f"{path}.anyOf[{i}]")
    return out


REFUSED_KEYWORDS = [
    "pattern",
    "format",
    "$ref",
    "oneOf",
    "allOf",
    "not",
    "multipleOf",
    "uniqueItems",
    "prefixItems",
    "$defs",
    "if",
    "dependentSchemas",
    "whatever",
]


@settings(max_examples=300, deadline=None)
@given(subset_schemas)
def test_every_schema_of_the_subset_is_accepted_and_is_valid_json_schema(
    schema: dict[str, Any],
) -> None:
    ts.check_schema(schema, P)
    Draft202012Validator.check_schema(schema)


@settings(max_examples=300, deadline=None)
@given(subset_schemas, st.data())
def test_one_unsupported_keyword_anywhere_is_refused_at_its_path(
    schema: dict[str, Any], data: st.DataObject
) -> None:
    schema = copy.deepcopy(schema)
    where, target = data.draw(st.sampled_from(subschemas(schema, P)))
    keyword = data.draw(st.sampled_from(REFUSED_KEYWORDS))
    target[keyword] = {}
    assert refusal(schema) == f"{where}: unsupported JSON Schema keyword {json.dumps(keyword)}"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**66), 2**66)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=6,
)
hostile = st.recursive(
    st.dictionaries(st.sampled_from(sorted(ts.KEYWORDS | ts.ANNOTATIONS)), json_values, max_size=4),
    lambda c: st.dictionaries(
        st.sampled_from(sorted(ts.KEYWORDS | ts.ANNOTATIONS)),
        c | json_values | st.lists(c, max_size=2) | st.dictionaries(names, c, max_size=2),
        max_size=4,
    ),
    max_leaves=8,
)


@settings(max_examples=500, deadline=None)
@given(hostile)
def test_hostile_schemas_get_bad_request_or_are_sound(schema: dict[str, Any]) -> None:
    """Only BadRequest, never another exception; what passes is valid JSON Schema that the
    validator can use."""
    try:
        ts.check_schema(schema, P)
    except BadRequest as e:
        assert e.message.startswith(P)
        return
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).is_valid({"a": 1})


def test_accepted_schemas_are_remembered_and_nothing_else_is() -> None:
    schema = {"type": "object", "properties": {"zz_cached": {"type": "string"}}}
    key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    ts._accepted.pop(key, None)
    ts.check_schema(schema, P)
    assert key in ts._accepted
    ts.check_schema(schema, "elsewhere")  # the same schema under another path: remembered
    bad = {"type": "object", "properties": {"zz_cached": {"type": "string", "pattern": "x"}}}
    for _ in range(2):
        assert refusal(bad).endswith('unsupported JSON Schema keyword "pattern"')
    assert json.dumps(bad, sort_keys=True, separators=(",", ":")) not in ts._accepted
    # the size limit is checked before the memory is
    assert refusal(schema, max_bytes=10).startswith(f"{P}: the schema is ")
    for i in range(ts._ACCEPTED_KEPT + 5):
        ts.check_schema({"const": i}, P)
    assert len(ts._accepted) == ts._ACCEPTED_KEPT
