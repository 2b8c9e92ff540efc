from __future__ import annotations

import json
from typing import Any

import pytest

from edged.config import Config
from edged.ingress import wire
from edged.types import Request

CFG = Config(device_id="dev1")


def default_topic(rid: str) -> str:
    return f"edged/dev1/response/{rid}"


def parse(
    body: Any,
    *,
    raw: bytes | None = None,
    response_topic: str | None = None,
    corr: bytes | None = None,
    expiry_s: int | None = None,
    cfg: Config = CFG,
) -> Request | wire.Rejection:
    payload = raw if raw is not None else json.dumps(body).encode()
    return wire.parse_request(
        payload,
        cfg=cfg,
        default_reply_topic=default_topic,
        response_topic=response_topic,
        correlation_data=corr,
        received_at_s=100.0,
        expiry_s=expiry_s,
    )


def rejected(result: Request | wire.Rejection) -> wire.Rejection:
    assert isinstance(result, wire.Rejection), result
    return result


def test_minimal_prompt_gets_defaults_and_generated_id() -> None:
    req = parse({"prompt": "hi"})
    assert isinstance(req, Request)
    assert len(req.id) == 32
    assert req.messages[0].role == "user" and req.messages[0].content == "hi"
    assert req.max_tokens == CFG.ingress.max_tokens_default
    assert req.stream is True and req.route == "auto" and req.sensitivity == "normal"
    assert req.reply.topic == default_topic(req.id)
    assert req.deadline_at_s is None


def test_v5_response_topic_wins_and_carries_correlation() -> None:
    req = parse(
        {"id": "a1", "prompt": "hi", "reply_to": "reply/other"},
        response_topic="reply/app",
        corr=b"\x00\x01",
    )
    assert isinstance(req, Request)
    assert req.reply.topic == "reply/app" and req.reply.correlation_data == b"\x00\x01"


def test_reply_to_used_for_v311_clients() -> None:
    req = parse({"id": "a1", "prompt": "hi", "reply_to": "reply/app"})
    assert isinstance(req, Request) and req.reply.topic == "reply/app"


@pytest.mark.parametrize(
    "topic,why",
    [
        ("reply/+", "wildcard"),
        ("reply/#", "wildcard"),
        ("home/lights", "must start with"),
        ("reply/\x01x", "control"),
        ("", "empty"),
    ],
)
def test_refused_reply_addresses_error_to_default_topic(topic: str, why: str) -> None:
    r = rejected(parse({"id": "r1", "prompt": "hi", "reply_to": topic}))
    assert r.error.code == "bad_request" and why in r.error.message
    assert r.reply is not None and r.reply.topic == default_topic("r1")
    r = rejected(parse({"id": "r2", "prompt": "hi"}, response_topic=topic or "x"))
    assert r.reply is not None and r.reply.topic == default_topic("r2")


def test_too_large_is_checked_before_parsing() -> None:
    raw = b"\xff" * (CFG.ingress.max_payload_bytes + 1)  # not even UTF-8
    r = rejected(parse(None, raw=raw, response_topic="reply/x"))
    assert r.error.code == "too_large"
    assert r.reply is not None and r.reply.topic == "reply/x"


def test_without_any_safe_address_the_rejection_has_no_reply() -> None:
    r = rejected(parse(None, raw=b"{oops"))
    assert r.reply is None and r.id is None and r.error.code == "bad_request"


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"prompt": 1}, "prompt"),
        ({"prompt": "hi", "max_tokens": "5"}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": True}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 10**9}, "max_tokens"),
        ({"prompt": "hi", "temperature": 9}, "temperature"),
        ({"prompt": "hi", "stream": "yes"}, "stream"),
        ({"prompt": "hi", "route": "Moon!"}, "route"),
        ({"prompt": "hi", "sensitivity": "secret"}, "sensitivity"),
        ({"prompt": "hi", "deadline_ms": -1}, "deadline_ms"),
        ({"prompt": "hi", "deadline_ms": 10**10}, "deadline_ms"),
        ({"prompt": "hi", "extra": 1}, "extra: unknown field"),
        ({}, "exactly one of"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, "exactly one of"),
        ({"prompt": "   "}, "empty"),
        ({"messages": []}, "empty"),
        ({"messages": [{"role": "user"}]}, "content"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "last message",
        ),
        ({"messages": [{"role": "user", "content": "x"}] * 65}, "at most"),
    ],
)
def test_field_errors_are_bad_request_naming_the_field(body: dict[str, Any], fragment: str) -> None:
    r = rejected(parse({"id": "f1", **body}))
    assert r.error.code == "bad_request"
    assert fragment in r.error.message
    assert r.reply is not None and r.reply.topic == default_topic("f1")


@pytest.mark.parametrize("bad_id", ["a/b", "a+b", "#", "a b", "x" * 129, "", 5, "\x00"])
def test_bad_ids_are_refused_without_echo(bad_id: Any) -> None:
    r = rejected(parse({"id": bad_id, "prompt": "hi"}, response_topic="reply/x"))
    assert r.id is None and r.error.code == "bad_request"
    assert r.reply is not None and r.reply.topic == "reply/x"
    r = rejected(parse({"id": bad_id, "prompt": "hi"}))
    assert r.reply is None  # no default topic can be built from a bad id


def test_non_object_json_and_invalid_utf8() -> None:
    for raw in (b"[]", b"3", b'"s"', b"null"):
        assert "JSON object" in rejected(parse(None, raw=raw)).error.message
    assert "UTF-8" in rejected(parse(None, raw=b'{"prompt":"\xc3"}')).error.message


def test_depth_limit_checked_before_parsing() -> None:
    deep = '{"prompt":"hi","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    cfg = Config(device_id="dev1", ingress={"max_payload_bytes": 1_000_000})
    r = rejected(parse(None, raw=deep.encode(), cfg=cfg))
    assert "nests deeper" in r.error.message
    assert not wire.json_depth_exceeds('{"a": "[[[[[[[[[[[[[[[[[[[[[["}', 3)
    assert wire.json_depth_exceeds("[[[[", 3)


def test_deadline_from_deadline_ms_and_message_expiry() -> None:
    req = parse({"prompt": "hi", "deadline_ms": 2500})
    assert isinstance(req, Request) and req.deadline_at_s == pytest.approx(102.5)
    req = parse({"prompt": "hi", "deadline_ms": 9000}, expiry_s=3)
    assert isinstance(req, Request) and req.deadline_at_s == pytest.approx(103.0)


def test_encoders_emit_the_documented_fields() -> None:
    assert json.loads(wire.encode_chunk("a", 3, "é")) == {
        "id": "a",
        "type": "chunk",
        "seq": 3,
        "text": "é",
    }
    err = json.loads(wire.encode_error(None, wire.BadRequest("nope")))
    assert err == {"id": None, "type": "error", "code": "bad_request", "message": "nope"}


def test_id_with_trailing_newline_is_refused() -> None:
    r = rejected(parse({"id": "abc\n", "prompt": "hi"}, response_topic="reply/x"))
    assert r.id is None and "id must be" in r.error.message


@pytest.mark.parametrize(
    "topic",
    [
        "edged/dev1/request",
        "edged/other/status",
        "edged/dev1",
        "edged/x/telemetry",
        "reply/a\x7fb",
        "reply/a\x85b",
    ],
)
def test_reply_address_cannot_target_edged_topics_or_c1_controls(topic: str) -> None:
    r = rejected(parse({"id": "t1", "prompt": "hi", "reply_to": topic}))
    assert r.error.code == "bad_request" and r.reply is not None
    assert r.reply.topic == default_topic("t1")


def test_own_response_topics_are_fine_as_reply_addresses() -> None:
    req = parse({"id": "t2", "prompt": "hi", "reply_to": "edged/dev1/response/app-7/t2"})
    assert isinstance(req, Request) and req.reply.topic == "edged/dev1/response/app-7/t2"


def test_another_devices_response_topics_are_refused() -> None:
    """One device must not publish into another's replies (a confused deputy past the
    broker's per-device ACLs)."""
    r = rejected(parse({"id": "t3", "prompt": "hi", "reply_to": "edged/dev2/response/t3"}))
    assert r.error.code == "bad_request"
    assert "edged/dev1/response/" in r.error.message
    assert r.reply is not None and r.reply.topic == default_topic("t3")


def test_correlation_data_is_echoed_with_reply_to_too() -> None:
    req = parse({"id": "c1", "prompt": "hi", "reply_to": "reply/app"}, corr=b"42")
    assert isinstance(req, Request) and req.reply.correlation_data == b"42"


@pytest.mark.parametrize(
    "raw,fragment",
    [
        (b'{"prompt": "hi", "temperature": NaN}', "NaN"),
        (b'{"prompt": "hi", "temperature": Infinity}', "Infinity"),
        (b'{"prompt": "hi", "prompt": "again"}', "duplicate key"),
        (b'{"prompt": "\\ud800 alone"}', "surrogate"),
    ],
)
def test_non_standard_json_is_refused(raw: bytes, fragment: str) -> None:
    r = rejected(parse(None, raw=raw, response_topic="reply/x"))
    assert r.error.code == "bad_request" and fragment in r.error.message


def test_paired_surrogate_escape_is_fine() -> None:
    req = parse(None, raw=b'{"prompt": "emoji \\ud83c\\udf6e"}')
    assert isinstance(req, Request) and req.messages[0].content == "emoji 🍮"


def test_correlation_data_is_bounded_because_every_reply_echoes_it() -> None:
    ok = parse({"prompt": "hi"}, response_topic="reply/app", corr=b"c" * 1024)
    assert isinstance(ok, Request) and ok.reply.correlation_data == b"c" * 1024
    r = rejected(parse({"prompt": "hi"}, response_topic="reply/app", corr=b"c" * 1025))
    assert r.error.code == "bad_request"
    assert r.error.message == "correlation data is 1025 bytes; the limit is 1024"
    assert r.reply is not None and r.reply.topic == "reply/app"  # the client still hears
