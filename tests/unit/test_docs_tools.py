"""docs/tools.md and the tool-calling parts of docs/protocol.md say what the code does: the
schema subset and its limits, the refused keywords, the config defaults, and the loop's
examples (which must parse and validate against docs/schemas/)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from edged.config import Config, IngressConfig
from edged.errors import BadRequest
from edged.ingress import wire
from edged.tools import schema as ts
from edged.types import Request
from tests.helpers import ROOT
from tests.unit.test_schemas import assert_valid

TOOLS_MD = (ROOT / "docs" / "tools.md").read_text(encoding="utf-8")
PROTOCOL_MD = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
FLAT = " ".join(TOOLS_MD.split())
CFG = Config(device_id="dev1")

#: What docs/tools.md says is refused, beyond "any keyword JSON Schema does not define".
REFUSED = [
    "$ref",
    "$defs",
    "$schema",
    "$id",
    "oneOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "pattern",
    "format",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "prefixItems",
    "contains",
    "uniqueItems",
    "multipleOf",
]


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_every_supported_keyword_and_annotation_is_documented() -> None:
    subset = section(TOOLS_MD, "The JSON Schema subset")
    shown = set(re.findall(r"`(\$?[A-Za-z]+)`", subset))
    assert not (ts.KEYWORDS | ts.ANNOTATIONS) - shown
    for name in ts.TYPES:
        assert f"`{name}`" in subset, name


@pytest.mark.parametrize("keyword", REFUSED)
def test_every_keyword_the_doc_calls_refused_is_refused(keyword: str) -> None:
    assert f"`{keyword}`" in section(TOOLS_MD, "The JSON Schema subset")
    with pytest.raises(BadRequest) as e:
        ts.check_schema({"type": "object", keyword: {}}, "s")
    assert e.value.message == f's: unsupported JSON Schema keyword "{keyword}"'


def test_the_limits_table_quotes_the_code() -> None:
    limits = section(TOOLS_MD, "Limits")
    ingress = IngressConfig()
    assert f"| Tools in one request | {ingress.max_tools} | `ingress.max_tools`" in limits
    assert f"| {ingress.max_schema_bytes:,} | `ingress.max_schema_bytes` |" in limits
    assert f"| {ingress.max_tool_result_bytes:,} | `ingress.max_tool_result_bytes` |" in limits
    assert "(at most 128)" in limits
    assert IngressConfig.model_fields["max_tools"].metadata[-1].le == 128
    assert f"| {ts.MAX_SCHEMA_DEPTH} | fixed |" in limits
    assert f"| Values in one `enum` | {ts.MAX_ENUM_VALUES} | fixed |" in limits
    assert f"| `properties` in one object schema | {ts.MAX_PROPERTIES} | fixed |" in limits
    assert f"| Branches in one `anyOf` | {ts.MAX_ANY_OF} | fixed |" in limits
    assert f"{ingress.max_payload_bytes:,} bytes" in limits
    assert f"nested at most {wire.MAX_JSON_DEPTH} levels" in limits
    assert f"at most {ts.MAX_PROPERTIES} in one object" in FLAT
    assert f"at most {ts.MAX_ENUM_VALUES} JSON values" in FLAT
    assert f"at most {ts.MAX_ANY_OF} schemas" in FLAT


def test_the_refusals_shown_are_the_messages_edged_gives() -> None:
    block = section(TOOLS_MD, "The JSON Schema subset").split("```text\n")[1].split("```")[0]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("tools[3].function.parameters.properties.hour", {"type": "integer", "multipleOf": 1}),
        ("response_format.json_schema.schema.properties.x", {"type": "int"}),
        ("tools[0].function.parameters", {"type": "object", "required": ["when"]}),
    ]
    shown = block.splitlines()
    for (path, schema), line in zip(cases, shown, strict=False):
        with pytest.raises(BadRequest) as e:
            ts.check_schema(schema, path)
        assert e.value.message == line
    with pytest.raises(BadRequest) as e:
        ts.check_parameters({"type": "string"}, "tools[1].function.parameters")
    assert e.value.message == shown[3]


def test_tool_choice_modes_are_all_explained() -> None:
    choice = section(TOOLS_MD, "`tool_choice`")
    for mode in ("auto", "none", "required"):
        assert f'| `"{mode}"`' in choice, mode
    assert '{"type": "function", "function": {"name":' in choice


def _json_blocks(text: str) -> list[Any]:
    return [json.loads(b.split("```")[0]) for b in text.split("```json\n")[1:]]


def _parse(body: dict[str, Any]) -> Request | wire.Rejection:
    return wire.parse_request(
        json.dumps(body).encode(),
        cfg=CFG,
        default_reply_topic=lambda i: f"reply/{i}",
        response_topic=None,
        correlation_data=None,
        received_at_s=0.0,
    )


def test_the_protocol_loop_example_is_real() -> None:
    ask, result, follow_up = _json_blocks(section(PROTOCOL_MD, "Tool calls: the whole loop"))
    assert_valid("request", ask)
    assert_valid("result", result)
    assert_valid("request", follow_up)
    first = _parse(ask)
    assert isinstance(first, Request) and first.tools[0].name == "set_alarm"
    # the call the result shows is what the follow-up sends back, and it parses
    assert follow_up["messages"][1]["tool_calls"] == result["tool_calls"]
    second = _parse(follow_up)
    assert isinstance(second, Request) and second.messages[-1].role == "tool"
    (offered,) = _json_blocks(section(TOOLS_MD, "Offering tools"))
    assert isinstance(_parse(offered), Request)
