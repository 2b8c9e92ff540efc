"""Generated payloads: parsing never raises, and every rejection has a wire code."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from edged.config import Config
from edged.errors import WIRE_CODES
from edged.ingress import wire
from edged.types import Request
from tests.fuzzing import examples
from tests.strategies import fields, payloads
from tests.tool_strategies import tool_requests

CFG = Config(device_id="dev1")


def check(payload: bytes, response_topic: str | None) -> None:
    out = wire.parse_request(
        payload,
        cfg=CFG,
        default_reply_topic=lambda i: f"edged/dev1/response/{i}",
        response_topic=response_topic,
        correlation_data=b"c",
        received_at_s=0.0,
    )
    if isinstance(out, wire.Rejection):
        assert out.error.code in WIRE_CODES and out.error.message
        if out.reply is not None:
            assert "+" not in out.reply.topic and "#" not in out.reply.topic
            assert out.reply.topic.startswith(("edged/", "reply/"))
    else:
        assert isinstance(out, Request)
        assert 1 <= out.max_tokens <= CFG.ingress.max_tokens_limit
        assert out.messages and out.messages[-1].role in ("user", "tool")
        assert "+" not in out.reply.topic and "#" not in out.reply.topic
        assert (out.tool_choice is None) == (not out.tools)
        if out.tool_choice is not None and out.tool_choice.mode == "function":
            assert out.tool_choice.name in {t.name for t in out.tools}
        for t in out.tools:  # what was accepted is a schema the validator can use
            Draft202012Validator(t.parameters).is_valid({})
        if out.response_format is not None and out.response_format.schema is not None:
            Draft202012Validator(out.response_format.schema).is_valid({})


# about 5 ms an example: 1,200 already give each optional field, wrong type and range
# hundreds of times; the thorough profile (tests/fuzzing.py) runs the full 6,000
@settings(
    max_examples=examples(default=1200, thorough=6000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(fields, st.one_of(st.none(), st.text(max_size=20), st.just("reply/ok")))
def test_generated_requests(body: dict[str, Any], response_topic: str | None) -> None:
    check(json.dumps(body).encode(), response_topic)


@settings(
    max_examples=examples(default=1000, thorough=4000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(payloads)
def test_generated_payloads(payload: bytes) -> None:
    check(payload, "reply/x")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tool_requests())
def test_generated_tool_requests(body: dict[str, Any]) -> None:
    check(json.dumps(body).encode(), "reply/ok")
