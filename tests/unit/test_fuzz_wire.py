"""Generated payloads: parsing never raises, and every rejection has a wire code."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.config import Config
from edged.errors import WIRE_CODES
from edged.ingress import wire
from edged.types import Request

CFG = Config(device_id="dev1")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10),
                                                                      children, max_size=5),
    max_leaves=20,
)  # fmt: skip
fields = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.text(max_size=140), st.integers(), st.none()),
    "prompt": st.one_of(st.text(max_size=200), st.integers(), st.none()),
    "messages": st.one_of(st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "robot", ""]),
         "content": st.one_of(st.text(max_size=50), st.integers())}), max_size=4), json_values),
    "max_tokens": st.one_of(st.integers(-10, 10**9), st.floats(allow_nan=False),
                            st.text(max_size=5)),
    "temperature": st.one_of(st.floats(allow_nan=False), st.integers(-3, 5), st.none()),
    "stream": st.one_of(st.booleans(), st.integers(0, 1), st.text(max_size=3)),
    "route": st.one_of(st.sampled_from(["auto", "local", "cloud", "moon"]), st.integers()),
    "sensitivity": st.sampled_from(["normal", "private", "secret"]),
    "deadline_ms": st.one_of(st.integers(-10**6, 10**10), st.floats(allow_nan=False)),
    "reply_to": st.one_of(st.text(max_size=30), st.sampled_from(
        ["reply/x", "reply/+", "edged/dev1/request", "home/#", "edged/a/response/b"])),
    "policy": st.one_of(st.text(max_size=10), st.integers()),
    "extra": json_values,
})  # fmt: skip


def check(payload: bytes, response_topic: str | None) -> None:
    out = wire.parse_request(
        payload, cfg=CFG, default_reply_topic=lambda i: f"edged/dev1/response/{i}",
        response_topic=response_topic, correlation_data=b"c", received_at_s=0.0,
    )  # fmt: skip
    if isinstance(out, wire.Rejection):
        assert out.error.code in WIRE_CODES and out.error.message
        if out.reply is not None:
            assert "+" not in out.reply.topic and "#" not in out.reply.topic
            assert out.reply.topic.startswith(("edged/", "reply/"))
    else:
        assert isinstance(out, Request)
        assert 1 <= out.max_tokens <= CFG.ingress.max_tokens_limit
        assert out.messages and out.messages[-1].role == "user"
        assert "+" not in out.reply.topic and "#" not in out.reply.topic


@settings(max_examples=6000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields, st.one_of(st.none(), st.text(max_size=20), st.just("reply/ok")))
def test_generated_requests(body: dict[str, Any], response_topic: str | None) -> None:
    check(json.dumps(body).encode(), response_topic)


@settings(max_examples=4000, deadline=None)
@given(st.binary(max_size=300))
def test_generated_bytes(payload: bytes) -> None:
    check(payload, "reply/x")
