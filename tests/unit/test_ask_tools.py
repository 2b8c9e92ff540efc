"""``edged ask --tools FILE --tool-choice CHOICE --json-schema FILE``: the request fields it
builds are ones edged's parser accepts, file problems are one line, and tool calls print
one line each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edged.cli import build_parser
from edged.cli.ask import tool_call_lines, tool_fields
from edged.config import Config
from edged.ingress import wire
from edged.types import Request, ResponseFormat, ToolChoice

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "set_alarm",
            "parameters": {
                "type": "object",
                "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}},
                "required": ["hour"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time"}},
]
SCHEMA = {"type": "object", "properties": {"colour": {"enum": ["red", "green"]}}}


def parsed(fields: dict[str, Any]) -> Request:
    body = {"id": "ask-1", "prompt": "Wake me at 6.", **fields}
    r = wire.parse_request(
        json.dumps(body).encode(),
        cfg=Config(device_id="d"),
        default_reply_topic=lambda i: f"reply/{i}",
        response_topic=None,
        correlation_data=None,
        received_at_s=0.0,
    )
    assert isinstance(r, Request), r
    return r


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    schema = tmp_path / "pick colour.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    return tools, schema


def test_the_flags_parse(files: tuple[Path, Path]) -> None:
    tools, schema = files
    args = build_parser().parse_args(
        [
            "ask",
            "--tools",
            str(tools),
            "--tool-choice",
            "required",
            "--json-schema",
            str(schema),
            "hi",
        ]
    )
    assert (args.tools, args.tool_choice, args.json_schema) == (tools, "required", schema)


@pytest.mark.parametrize(
    "choice,expected",
    [
        (None, ToolChoice("auto")),
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        ("get_time", ToolChoice("function", "get_time")),
    ],
)
def test_tools_and_choice_become_fields_edged_accepts(
    files: tuple[Path, Path], choice: str | None, expected: ToolChoice
) -> None:
    req = parsed(tool_fields(files[0], choice, None))
    assert [t.name for t in req.tools] == ["set_alarm", "get_time"]
    assert req.tool_choice == expected


def test_a_json_schema_file_becomes_response_format_named_after_it(
    files: tuple[Path, Path],
) -> None:
    fields = tool_fields(None, None, files[1])
    assert fields["response_format"]["json_schema"]["name"] == "pick_colour"
    req = parsed(fields)
    assert req.response_format == ResponseFormat("json_schema", "pick_colour", SCHEMA, True)
    assert tool_fields(None, None, None) == {}


def test_file_problems_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=r"^--tools .*nope.json: cannot read it: "):
        tool_fields(missing, None, None)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match=r"^--json-schema .*broken.json: not valid JSON"):
        tool_fields(None, None, broken)
    obj = tmp_path / "obj.json"
    obj.write_text("{}")
    with pytest.raises(ValueError, match=r"must hold a JSON list of tools"):
        tool_fields(obj, None, None)
    lst = tmp_path / "list.json"
    lst.write_text("[]")
    with pytest.raises(ValueError, match=r"must hold a JSON Schema object"):
        tool_fields(None, None, lst)


def test_tool_calls_print_one_line_each() -> None:
    result = {
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "set_alarm", "arguments": '{"hour":6,"minute":30}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]
    }
    assert tool_call_lines(result) == [
        'tool call set_alarm {"hour": 6, "minute": 30} (id c1)',
        "tool call get_time {} (id c2)",
    ]
    assert tool_call_lines({"tool_calls": []}) == tool_call_lines({}) == []
