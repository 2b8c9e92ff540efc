"""edged.backends.cloud_messages: what a finish_reason means next to assembled calls, and
reading a non-streamed chat.completion without trusting its types (the request shapes are
checked against a real HTTP server in tests/integration/test_cloud_tools.py)."""

from __future__ import annotations

from typing import Any

import pytest

from edged.backends.cloud_messages import completion, turn_end
from edged.backends.failures import BadStream
from edged.errors import ToolCallInvalid
from edged.types import ToolCall, Usage

CALL = (ToolCall("a", "f", "{}"),)


@pytest.mark.parametrize(
    ("finish", "calls", "out"),
    [
        ("stop", (), "stop"),
        ("length", (), "length"),
        ("content_filter", (), "stop"),
        ("tool_calls", CALL, "tool_calls"),
        ("stop", CALL, "tool_calls"),  # some servers say stop
    ],
)
def test_turn_end(finish: str, calls: tuple[ToolCall, ...], out: str) -> None:
    assert turn_end(finish, calls) == out


@pytest.mark.parametrize(
    ("finish", "calls", "match"),
    [
        ("length", CALL, "max_tokens"),
        ("content_filter", CALL, "'content_filter'"),
        ("tool_calls", (), "sent no call"),
    ],
)
def test_turn_end_disagreeing_with_the_calls(
    finish: str, calls: tuple[ToolCall, ...], match: str
) -> None:
    with pytest.raises(ToolCallInvalid, match=match):
        turn_end(finish, calls)


def test_completion_reads_choice_0_and_indexes_its_calls() -> None:
    call = {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    got = completion(
        {
            "choices": [
                {"index": 1, "message": {"content": "no"}, "finish_reason": "stop"},
                {
                    "index": 0,
                    "message": {"content": None, "tool_calls": [call, call]},
                    "finish_reason": "tool_calls",
                },
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        }
    )
    assert got.text == ""
    assert [c["index"] for c in got.tool_calls] == [0, 1]
    assert got.finish_reason == "tool_calls"
    assert got.usage == Usage(3, 4)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"choices": []},
        {"choices": [{"index": 0}]},
        {"choices": [{"index": 0, "message": {"content": 5}}]},
        {"choices": [{"index": 0, "message": {"tool_calls": {"a": 1}}}]},
        {"choices": [{"index": 0, "message": {}, "finish_reason": 3}]},
        {"choices": [{"index": 0, "message": {}}], "usage": {"prompt_tokens": "x"}},
        {"choices": ["x"]},
    ],
)
def test_completion_that_is_not_one_is_a_bad_stream(data: Any) -> None:
    with pytest.raises(BadStream, match="malformed response"):
        completion(data)
