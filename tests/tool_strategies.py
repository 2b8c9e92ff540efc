"""Hypothesis strategies for tool-calling requests (tools, tool_choice, response_format, tool
turns): mostly well formed, so that the parser gets past the first field, with one thing
broken often enough to reach every refusal. Shared by the schema tests, the wire fuzz
(tests/unit/test_fuzz_wire.py) and, through ``tests.strategies.payloads``, the run through
the real daemon."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from edged.tools.schema import MAX_SCHEMA_DEPTH

names = st.text(alphabet="abcxyz_. -", min_size=1, max_size=6)
_leaves = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={
            "minLength": st.integers(0, 3),
            "maxLength": st.integers(3, 30),
            "description": st.text(max_size=8),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["integer", "number"])},
        optional={
            "minimum": st.integers(-50, 0),
            "maximum": st.integers(1, 50),
            "title": st.text(max_size=8),
        },
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["boolean", "null", ["string", "null"]])}),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), min_size=1, max_size=5).map(
        lambda v: {"enum": v}
    ),
    st.integers().map(lambda v: {"const": v}),
)


def _object(props: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted(props)
    return st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.just(props)},
        optional={
            "required": st.lists(st.sampled_from(keys), unique=True) if keys else st.just([]),
            "additionalProperties": st.booleans(),
        },
    )


def _children(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.dictionaries(names, children, max_size=4).flatmap(_object),
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": children},
            optional={"minItems": st.integers(0, 1), "maxItems": st.integers(1, 4)},
        ),
        st.lists(children, min_size=1, max_size=3).map(lambda b: {"anyOf": b}),
    )


def depth(schema: dict[str, Any]) -> int:
    """How deep schemas nest in ``schema`` (the root is 1)."""
    subs = [*schema.get("properties", {}).values(), *schema.get("anyOf", [])]
    if "items" in schema:
        subs.append(schema["items"])
    return 1 + max((depth(s) for s in subs), default=0)


#: Schemas of the supported subset, within its nesting limit.
subset_schemas = st.recursive(_leaves, _children, max_leaves=10).filter(
    lambda s: depth(s) <= MAX_SCHEMA_DEPTH
)
#: Smaller ones (cheaper to generate), for the requests below.
small_schemas = st.recursive(_leaves, _children, max_leaves=3)
#: Object schemas of the subset: what a tool's parameters may be.
parameter_schemas = st.dictionaries(names, small_schemas, max_size=3).flatmap(_object)

#: One thing wrong with a schema, put at its root or inside.
_BREAKAGES: list[tuple[str, Any]] = [
    ("pattern", "^a"),
    ("format", "date"),
    ("$ref", "#"),
    ("oneOf", [{}]),
    ("multipleOf", 2),
    ("type", "int"),
    ("type", []),
    ("enum", []),
    ("required", ["nope"]),
    ("minimum", "0"),
    ("additionalProperties", {}),
    ("anyOf", []),
    ("items", [{}]),
    ("whatever", 1),
]


@st.composite
def broken_schemas(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A schema from ``base`` with one keyword set to something edged refuses, or not a
    schema at all."""
    schema = draw(base)
    if draw(st.integers(0, 9)) == 5:
        return draw(st.sampled_from([True, [], "object", None, 5]))
    target = schema
    props = [p for p in schema.get("properties", {}).values() if isinstance(p, dict)]
    if props and draw(st.booleans()):
        target = draw(st.sampled_from(props))
    key, value = draw(st.sampled_from(_BREAKAGES))
    target[key] = value
    return schema


TOOL_NAMES = ["set_alarm", "get_time", "lights", "weather"]


@st.composite
def tools_lists(draw: st.DrawFn) -> Any:
    """A list of tools in the OpenAI shape, sometimes with one broken."""
    chosen = draw(st.lists(st.sampled_from(TOOL_NAMES), min_size=1, max_size=3, unique=True))
    tools: list[Any] = []
    for name in chosen:
        fn: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            fn["description"] = draw(st.text(max_size=12))
        if draw(st.integers(0, 3)):
            fn["parameters"] = draw(parameter_schemas)
        tools.append({"type": "function", "function": fn})
    if draw(st.integers(0, 2)) == 0:  # break one thing
        i = draw(st.integers(0, len(tools) - 1))
        how = draw(st.sampled_from(["schema", "name", "type", "extra", "dup", "shape"]))
        fn = tools[i]["function"]
        if how == "schema":
            fn["parameters"] = draw(broken_schemas(parameter_schemas))
        elif how == "name":
            fn["name"] = draw(st.sampled_from(["", "a b", "x" * 65, "é", 5]))
        elif how == "type":
            tools[i]["type"] = draw(st.sampled_from(["retrieval", None, 1]))
        elif how == "extra":
            tools[i][draw(st.sampled_from(["x", "strict"]))] = 1
        elif how == "dup":
            tools.append(tools[i])
        else:
            tools[i] = draw(st.sampled_from([[], "tool", None, {"function": fn}]))
    return tools


def _call(call_id: str, name: str, args: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


@st.composite
def conversations(draw: st.DrawFn) -> list[Any]:
    """A user turn, then rounds of an assistant turn with calls and the tool turns answering
    them (in any order), sometimes with one rule broken: a call unanswered or answered
    twice, an unknown id, null content, arguments that are not an object, a stray field."""
    msgs: list[Any] = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": "Be brief."})
    msgs.append({"role": "user", "content": draw(st.text(max_size=20))})
    n = 0
    for _ in range(draw(st.integers(0, 3))):
        k = draw(st.integers(1, 3))
        calls = [
            _call(
                f"call_{n + j}",
                draw(st.sampled_from(TOOL_NAMES)),
                json.dumps(draw(st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))),
            )
            for j in range(k)
        ]
        n += k
        content = draw(st.one_of(st.none(), st.text(max_size=8)))
        turn: dict[str, Any] = {"role": "assistant", "tool_calls": calls}
        if content is not None or draw(st.booleans()):
            turn["content"] = content
        msgs.append(turn)
        for c in draw(st.permutations(calls)):
            msgs.append(
                {"role": "tool", "tool_call_id": c["id"], "content": draw(st.text(max_size=20))}
            )
        if draw(st.booleans()):
            msgs.append({"role": "assistant", "content": "ok"})
            msgs.append({"role": "user", "content": "and?"})
    if draw(st.integers(0, 2)) == 0 and len(msgs) > 1:  # break one rule
        i = draw(st.integers(0, len(msgs) - 1))
        m = dict(msgs[i])
        how = draw(
            st.sampled_from(["drop", "twice", "id", "null", "args", "extra", "role", "last"])
        )
        if how == "drop":
            del msgs[i]
        elif how == "twice":
            msgs.insert(i, m)
        elif how == "id":
            m["tool_call_id"] = draw(st.sampled_from(["nope", "", "a b", 5]))
            msgs[i] = m
        elif how == "null":
            m["content"] = None
            msgs[i] = m
        elif how == "args" and m.get("tool_calls"):
            bad = draw(st.sampled_from(["[]", "{", '{"a":NaN}', '{"a":1,"a":2}', '"x"']))
            m["tool_calls"] = [{**m["tool_calls"][0], "function": {"name": "x", "arguments": bad}}]
            msgs[i] = m
        elif how == "extra":
            m[draw(st.sampled_from(["name", "tool_calls", "tool_call_id", "x"]))] = "v"
            msgs[i] = m
        elif how == "role":
            m["role"] = draw(st.sampled_from(["tool", "function", "developer"]))
            msgs[i] = m
        else:
            msgs.append({"role": "assistant", "content": "the end"})
    return msgs


tool_choices = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    st.sampled_from([*TOOL_NAMES, "nope"]).map(
        lambda n: {"type": "function", "function": {"name": n}}
    ),
    st.sampled_from(["any", 1, {}, {"type": "function"}, {"type": "tool", "function": {}}]),
)


@st.composite
def response_formats(draw: st.DrawFn) -> Any:
    """``response_format`` of every type, the json_schema one sometimes broken."""
    kind = draw(st.sampled_from(["text", "json_object", "json_schema", "json_schema", "bad"]))
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "bad":
        return draw(st.sampled_from(["json", {"type": "xml"}, {"type": "json_schema"}, [], 1]))
    spec: dict[str, Any] = {"name": draw(st.sampled_from(["pick", "a-b_1", "a b", ""]))}
    spec["schema"] = draw(st.one_of(small_schemas, small_schemas, broken_schemas(small_schemas)))
    if draw(st.booleans()):
        spec["strict"] = draw(st.sampled_from([True, False, None, "yes"]))
    return {"type": "json_schema", "json_schema": spec}


@st.composite
def tool_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request that uses tool calling: a prompt or a conversation with tool turns, and
    any of tools, tool_choice and response_format."""
    body: dict[str, Any] = {"id": "tools-1"}
    if draw(st.integers(0, 3)) == 0:
        body["prompt"] = "Wake me at 6."
    else:
        body["messages"] = draw(conversations())
    if draw(st.integers(0, 3)):
        body["tools"] = draw(tools_lists())
    if draw(st.booleans()):
        body["tool_choice"] = draw(tool_choices)
    if draw(st.integers(0, 2)) == 0:
        body["response_format"] = draw(response_formats())
    return body
