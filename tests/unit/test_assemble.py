"""edged.tools.assemble: streamed tool-call fragments (OpenAI ``delta.tool_calls``) into
whole calls, by index, with the protocol errors and limits checked as fragments arrive."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.errors import ToolCallInvalid
from edged.tools import validate
from edged.tools.assemble import MAX_CALLS, CallAssembler
from edged.types import ToolCall
from tests.strategies import json_values


def frag(
    index: int | None = 0,
    id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
    type: str | None = None,
) -> dict[str, Any]:
    """A fragment in the JSON shape of a chunk's ``delta.tool_calls[i]``."""
    out: dict[str, Any] = {}
    if index is not None:
        out["index"] = index
    if id is not None:
        out["id"] = id
    if type is not None:
        out["type"] = type
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if arguments is not None:
        fn["arguments"] = arguments
    if fn:
        out["function"] = fn
    return out


def assemble(*fragments: Any) -> tuple[ToolCall, ...]:
    a = CallAssembler()
    for f in fragments:
        a.feed(f)
    return a.finish()


def split_stream(
    arguments: str, cuts: list[int], index: int = 0, call_id: str = "call_1"
) -> list[Any]:
    """The fragments of one call whose arguments are cut at ``cuts`` (sorted offsets)."""
    out: list[Any] = [frag(index, id=call_id, type="function", name="f", arguments="")]
    prev = 0
    for c in [*cuts, len(arguments)]:
        out.append(frag(index, arguments=arguments[prev:c]))
        prev = c
    return out


# --- the ordinary shapes ---------------------------------------------------------------------


def test_one_call_in_fragments() -> None:
    calls = assemble(
        frag(0, id="call_a", type="function", name="set_alarm", arguments=""),
        frag(0, arguments='{"hou'),
        frag(0, arguments='r": 6, "minute"'),
        frag(0, arguments=": 30}"),
    )
    assert calls == (ToolCall("call_a", "set_alarm", '{"hour": 6, "minute": 30}'),)


def test_several_calls_by_index_come_back_in_index_order() -> None:
    calls = assemble(
        frag(1, id="b", name="light", arguments='{"on"'),
        frag(0, id="a", name="alarm", arguments='{"h":'),
        frag(1, arguments=": false}"),
        frag(0, arguments=" 6}"),
    )
    assert calls == (ToolCall("a", "alarm", '{"h": 6}'), ToolCall("b", "light", '{"on": false}'))


def test_repeated_id_and_name_with_the_same_value_are_fine() -> None:
    calls = assemble(
        frag(0, id="a", name="f", arguments="{"),
        frag(0, id="a", name="f", arguments="}"),
        frag(0, id="", name="", arguments=""),  # empty: not in this fragment
    )
    assert calls == (ToolCall("a", "f", "{}"),)


def test_no_arguments_at_all_is_an_empty_object() -> None:
    assert assemble(frag(0, id="a", name="now")) == (ToolCall("a", "now", "{}"),)
    assert assemble(frag(0, id="a", name="now", arguments="")) == (ToolCall("a", "now", "{}"),)


def test_no_id_is_left_to_the_validator_which_assigns_one() -> None:
    (call,) = assemble(frag(0, name="now", arguments="{}"))
    assert call.id == ""


def test_no_fragment_no_call() -> None:
    a = CallAssembler()
    a.feed_all(None)
    assert not a.started
    assert a.finish() == ()


def test_fragments_without_index_are_call_0_while_no_other_index_was_seen() -> None:
    calls = assemble(frag(None, id="a", name="f", arguments='{"x"'), frag(None, arguments=":1}"))
    assert calls == (ToolCall("a", "f", '{"x":1}'),)
    # index 0 seen explicitly: still call 0
    calls = assemble(frag(0, id="a", name="f", arguments="{"), frag(None, arguments="}"))
    assert calls == (ToolCall("a", "f", "{}"),)


def test_a_fragment_without_index_after_another_index_is_a_protocol_error() -> None:
    a = CallAssembler()
    a.feed(frag(0, id="a", name="f", arguments="{}"))
    a.feed(frag(1, id="b", name="g", arguments="{"))
    with pytest.raises(ToolCallInvalid, match="without an index"):
        a.feed(frag(None, arguments="}"))


def test_sdk_objects_are_read_by_attribute() -> None:
    def obj(**kw: Any) -> SimpleNamespace:
        return SimpleNamespace(**kw)

    a = CallAssembler()
    a.feed_all(
        [
            obj(index=0, id="a", type="function", function=obj(name="f", arguments='{"k"')),
            obj(index=1, id="b", type="function", function=obj(name="g", arguments=None)),
        ]
    )
    a.feed_all([obj(index=0, id=None, type=None, function=obj(name=None, arguments=': "v"}'))])
    a.feed(obj(index=0))  # no function at all: nothing added
    assert a.finish() == (ToolCall("a", "f", '{"k": "v"}'), ToolCall("b", "g", "{}"))
    assert a.fragments == 4


# --- protocol errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "match"),
    [
        (frag(0, id="other"), "changed its id from 'a' to 'other'"),
        (frag(0, name="g"), "changed its function name from 'f' to 'g'"),
        (frag(0, type="code"), "type is 'code', not 'function'"),
        (frag(-1, arguments="x"), "index -1"),
        (frag(0, arguments=None) | {"index": True}, "index True"),
        (frag(0, arguments=None) | {"index": "0"}, "index '0'"),
        ({"index": 0, "function": {"arguments": 5}}, "function.arguments is int"),
        ({"index": 0, "function": {"name": ["f"]}}, "function.name is list"),
        ({"index": 0, "id": 7}, "id is int"),
        ({"index": 0, "function": "f"}, "function is str"),
        ("oops", "fragment that is str"),
        (None, "fragment that is NoneType"),
    ],
)
def test_protocol_errors_say_what_the_backend_sent(second: Any, match: str) -> None:
    a = CallAssembler()
    a.feed(frag(0, id="a", name="f", arguments="{"))
    with pytest.raises(ToolCallInvalid, match=match):
        a.feed(second)


def test_tool_calls_that_are_not_a_list() -> None:
    for bad in ("x", {"index": 0}, 3):
        with pytest.raises(ToolCallInvalid, match="not a list"):
            CallAssembler().feed_all(bad)


def test_a_call_without_a_name_is_a_protocol_error_at_the_end() -> None:
    a = CallAssembler()
    a.feed(frag(0, id="a", name="f", arguments="{}"))
    a.feed(frag(2, id="c", arguments="{}"))
    with pytest.raises(ToolCallInvalid, match="tool call 2: the backend never sent its name"):
        a.finish()


def test_argument_text_is_never_in_a_message() -> None:
    a = CallAssembler(max_call_bytes=20)
    a.feed(frag(0, id="a", name="f", arguments='{"pin": "4711'))
    with pytest.raises(ToolCallInvalid) as info:
        a.feed(frag(0, arguments='0000000000"}'))
    assert "4711" not in info.value.message


# --- limits, checked as fragments arrive -------------------------------------------------------


def test_per_call_limit_is_checked_as_fragments_arrive() -> None:
    a = CallAssembler(max_call_bytes=16, max_turn_bytes=1000)
    a.feed(frag(0, id="a", name="f", arguments="{"))  # 3 bytes
    a.feed(frag(0, arguments='"k": "vvvvvv'))  # 15 bytes
    with pytest.raises(ToolCallInvalid, match=r"tool call 0 \(f\) is over 16 bytes"):
        a.feed(frag(0, arguments="vv"))


def test_bytes_are_utf8_bytes() -> None:
    a = CallAssembler(max_call_bytes=10)
    a.feed(frag(0, name="f", arguments="é" * 4))  # 1 + 8 bytes
    with pytest.raises(ToolCallInvalid, match="over 10 bytes"):
        a.feed(frag(0, arguments="é"))


def test_per_turn_limit_over_all_calls() -> None:
    a = CallAssembler(max_call_bytes=100, max_turn_bytes=50)
    for i in range(4):
        a.feed(frag(i, name="f", arguments="x" * 11))  # 12 bytes each: 48
    with pytest.raises(ToolCallInvalid, match="over 50 bytes"):
        a.feed(frag(4, name="f", arguments="xx"))


def test_number_of_calls_is_bounded() -> None:
    a = CallAssembler()
    for i in range(MAX_CALLS):
        a.feed(frag(i * 1000, name="f"))  # sparse indexes count as calls too
    with pytest.raises(ToolCallInvalid, match=f"more than {MAX_CALLS} tool calls"):
        a.feed(frag(10**9, name="f"))
    assert MAX_CALLS == validate.MAX_CALLS_PER_TURN


# --- arguments split anywhere reassemble exactly -----------------------------------------------

objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


def arguments_texts(obj: dict[str, Any]) -> list[str]:
    """The forms a server may send: ASCII-escaped (``\\u`` escapes), raw UTF-8, spaced."""
    return [
        json.dumps(obj),
        json.dumps(obj, ensure_ascii=False, separators=(",", ":")),
        json.dumps(obj, indent=1),
    ]


@settings(max_examples=60, deadline=None)
@given(objects)
def test_split_at_every_boundary_reassembles_exactly(obj: dict[str, Any]) -> None:
    for text in arguments_texts(obj):
        for k in range(len(text) + 1):  # every single cut, inside strings and escapes too
            (call,) = assemble(*split_stream(text, [k]))
            assert call.arguments == text
        # and one fragment per character
        (call,) = assemble(*split_stream(text, list(range(1, len(text)))))
        assert call.arguments == text
        assert json.loads(call.arguments) == obj


@settings(max_examples=60, deadline=None)
@given(objects, objects, st.data())
def test_two_calls_interleaved_at_random_cuts(
    one: dict[str, Any], two: dict[str, Any], data: st.DataObject
) -> None:
    texts = [json.dumps(one), json.dumps(two, ensure_ascii=False)]
    streams = []
    for i, text in enumerate(texts):
        cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=10)))
        streams.append(split_stream(text, cuts, index=i, call_id=f"c{i}"))
    order = data.draw(st.permutations([0] * len(streams[0]) + [1] * len(streams[1])))
    a = CallAssembler()
    pos = [0, 0]
    for which in order:
        a.feed(streams[which][pos[which]])
        pos[which] += 1
    assert a.finish() == (ToolCall("c0", "f", texts[0]), ToolCall("c1", "f", texts[1]))


def test_a_character_outside_the_bmp_split_between_its_surrogates_is_joined() -> None:
    # each chunk's JSON escaped one half: "\ud83d" then "\ude00" arrive as lone surrogates
    first = json.loads('"{\\"e\\": \\"\\ud83d"')
    second = json.loads('"\\ude00\\"}"')
    (call,) = assemble(frag(0, name="f", arguments=first), frag(0, arguments=second))
    assert call.arguments == '{"e": "\U0001f600"}'
    call.arguments.encode("utf-8")  # can be sent on


def test_a_lone_surrogate_is_a_protocol_error() -> None:
    lone = json.loads('"{\\"e\\": \\"\\ud83d\\"}"')
    with pytest.raises(ToolCallInvalid, match="lone UTF-16 surrogate"):
        assemble(frag(0, name="f", arguments=lone))
