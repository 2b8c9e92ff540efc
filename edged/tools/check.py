"""A fast yes/no check of a value against a schema of the supported subset (schema.py).

``compile_check(schema)`` turns a schema (already accepted by ``check_schema``) into a plain
Python predicate with the meaning Draft 2020-12 gives those keywords, so that a hot path
(the guardian's tool rules, decided on every call) pays about a microsecond where
jsonschema's ``is_valid`` pays about 15. It says only whether the value is valid; the
messages that name a problem still come from jsonschema (validate.py). Pure code, no I/O;
tests/unit/test_tool_check.py holds it to jsonschema's answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_test(name: str) -> Check:
    if name == "object":
        return lambda v: isinstance(v, dict)
    if name == "array":
        return lambda v: isinstance(v, list)
    if name == "string":
        return lambda v: isinstance(v, str)
    if name == "boolean":
        return lambda v: isinstance(v, bool)
    if name == "null":
        return lambda v: v is None
    if name == "number":
        return _is_number
    # integer: 1.0 is one too, as JSON Schema counts it
    return lambda v: _is_number(v) and (isinstance(v, int) or (math.isfinite(v) and v == int(v)))


def json_equal(a: object, b: object) -> bool:
    """Equality as JSON Schema's ``enum``/``const`` mean it: booleans are not numbers,
    1 equals 1.0, objects and arrays compare deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def compile_check(schema: Any) -> Check:
    """The predicate of ``schema`` (a dict, or a boolean schema)."""
    if schema is True:
        return lambda v: True
    if schema is False or not isinstance(schema, dict):
        return lambda v: False
    tests: list[Check] = []
    t = schema.get("type")
    if t is not None:
        tests.append(_any_of([_type_test(x) for x in ([t] if isinstance(t, str) else t)]))
    if "enum" in schema:
        values = list(schema["enum"])
        if all(isinstance(x, str) for x in values):  # the common case: a set lookup
            names = frozenset(values)
            tests.append(lambda v: isinstance(v, str) and v in names)
        else:
            tests.append(lambda v: any(json_equal(v, x) for x in values))
    if "const" in schema:
        c = schema["const"]
        tests.append(lambda v: json_equal(v, c))
    bounds: list[Check] = []
    if "minimum" in schema:
        lo = schema["minimum"]
        bounds.append(lambda v: v >= lo)
    if "maximum" in schema:
        hi = schema["maximum"]
        bounds.append(lambda v: v <= hi)
    if "exclusiveMinimum" in schema:
        xlo = schema["exclusiveMinimum"]
        bounds.append(lambda v: v > xlo)
    if "exclusiveMaximum" in schema:
        xhi = schema["exclusiveMaximum"]
        bounds.append(lambda v: v < xhi)
    if bounds:
        within = _all_of(bounds)
        tests.append(lambda v: not _is_number(v) or within(v))
    if "minLength" in schema or "maxLength" in schema:
        smin, smax = schema.get("minLength", 0), schema.get("maxLength")
        tests.append(
            lambda v: (
                not isinstance(v, str) or (smin <= len(v) and (smax is None or len(v) <= smax))
            )
        )
    if "minItems" in schema or "maxItems" in schema:
        amin, amax = schema.get("minItems", 0), schema.get("maxItems")
        tests.append(
            lambda v: (
                not isinstance(v, list) or (amin <= len(v) and (amax is None or len(v) <= amax))
            )
        )
    if "items" in schema:
        item = compile_check(schema["items"])
        tests.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
    if "anyOf" in schema:
        tests.append(_any_of([compile_check(s) for s in schema["anyOf"]]))
    tests += _object_tests(schema)
    return _all_of(tests)


def _all_of(tests: list[Check]) -> Check:
    if not tests:
        return lambda v: True
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda v: a(v) and b(v)

    def every(v: Any) -> bool:
        # a plain loop: all() over a generator costs about 0.3 us more per call
        for test in tests:  # noqa: SIM110
            if not test(v):
                return False
        return True

    return every


def _any_of(tests: list[Check]) -> Check:
    if len(tests) == 1:
        return tests[0]

    def some(v: Any) -> bool:
        for test in tests:  # noqa: SIM110 (as in _all_of)
            if test(v):
                return True
        return False

    return some


def _object_tests(schema: dict[str, Any]) -> list[Check]:
    tests: list[Check] = []
    required = frozenset(schema.get("required", ()))
    if required:
        tests.append(lambda v: not isinstance(v, dict) or required <= v.keys())
    props = {k: compile_check(s) for k, s in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties")
    other = None if extra is None else compile_check(extra)
    if props or other is not None:

        def fields(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, x in v.items():
                sub = props.get(k, other)
                if sub is not None and not sub(x):
                    return False
            return True

        tests.append(fields)
    return tests
