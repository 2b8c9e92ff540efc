"""The compiled schema check (edged.tools.check) gives jsonschema's answer on every value."""

from __future__ import annotations

import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from edged.tools.check import compile_check
from edged.tools.schema import check_schema

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "celsius": {"type": "number", "minimum": 16, "maximum": 26},
            "room": {"type": "string", "enum": ["kitchen", "hall"]},
        },
        "required": ["celsius"],
    },
    {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False},
    {"type": "object", "properties": {"k": {"type": "boolean"}}, "additionalProperties": True},
    {"type": ["string", "null"], "minLength": 1, "maxLength": 3},
    {"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0}, "maxItems": 2},
    {"minItems": 1, "exclusiveMaximum": 2},
    {"enum": [1, "a", True, None, [1], {"k": 0}]},
    {"const": 0},
    {"const": False},
    {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 5}]},
    {"type": "object", "properties": {"room": {"const": "garage"}}},
    {},
]


def value(rnd: random.Random, depth: int = 0) -> Any:
    pick = rnd.randrange(9 if depth < 2 else 7)
    if pick == 0:
        return None
    if pick == 1:
        return rnd.choice([True, False])
    if pick == 2:
        return rnd.choice([0, 1, 5, 16, 26, 27, -3, 2])
    if pick == 3:
        return rnd.choice([0.0, 1.0, 15.9, 16.0, 21.5, 26.0, 26.1, 2.5, 5.0])
    if pick == 4:
        return rnd.choice(["", "a", "ab", "kitchen", "hall", "garage", "abcd"])
    if pick == 5:
        return rnd.choice([[1], [], [1, 2], [0], [1, 2, 3]])
    if pick == 6:
        return {"k": 0}
    if pick == 7:
        return [value(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    keys = ["celsius", "room", "n", "k", "x"]
    return {k: value(rnd, depth + 1) for k in rnd.sample(keys, rnd.randrange(4))}


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
def test_the_compiled_check_agrees_with_jsonschema(schema: dict[str, Any]) -> None:
    check_schema(schema, "s")  # in the subset
    reference = Draft202012Validator(schema)
    fast = compile_check(schema)
    rnd = random.Random(7)
    for _ in range(3000):
        v = value(rnd)
        assert fast(v) == reference.is_valid(v), (schema, v)
