"""The HTTP front door's conversions (edged.ingress.openai_wire): OpenAI chat bodies through
the MQTT wire checks, results and errors in OpenAI shapes; and a cancelled request (a client
that hung up) closes its backend stream and its energy window."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from edged.config import Config, PolicyConfig, RouterConfig
from edged.energy.meter import NullMeter
from edged.errors import BadRequest, Blocked, Busy, EdgedError, TooLarge
from edged.guardian import PassGuardian
from edged.ingress import openai_wire as ow
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.types import EnergyReport, Finished, Request, Started, TextDelta, Usage
from tests.unit.doubles import Script, Sink

MODELS = ["auto", "local", "cloud"]


def parse(body: object, cfg: Config | None = None) -> Request:
    raw = json.dumps(body).encode()
    return ow.parse_chat(
        raw, cfg=cfg or Config(), models=MODELS, request_id="http-1", received_at_s=time.monotonic()
    )


def test_a_body_becomes_the_same_request_as_on_mqtt() -> None:
    req = parse(
        {
            "model": "cloud",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hi"}]},
            ],
            "max_completion_tokens": 12,
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "u1",
            "edged": {"sensitivity": "private", "deadline_ms": 5000},
        }
    )
    assert req.route == "cloud" and req.max_tokens == 12 and req.temperature == 0.5
    assert [m.role for m in req.messages] == ["system", "user"]
    assert req.messages[1].content == "hi" and req.sensitivity == "private"
    assert req.stream is False and req.deadline_at_s is not None


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "local", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n:"),
        ({"model": "local", "messages": [{"role": "user", "content": "x"}], "foo": 1}, "foo"),
        ({"model": "local", "messages": []}, "empty"),
        (
            {"model": "local", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6},
            "max_tokens",
        ),
        (
            {"model": "local", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "text parts",
        ),
        (
            {
                "model": "local",
                "messages": [{"role": "user", "content": "x"}],
                "edged": {"route": "x"},
            },
            "edged",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_what_mqtt_refuses_is_refused(body: object, why: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse(body)
    assert why in e.value.message


def test_size_and_depth_limits_are_the_mqtt_ones() -> None:
    cfg = Config()
    big = {"model": "local", "messages": [{"role": "user", "content": "x" * 70000}]}
    with pytest.raises(TooLarge):
        parse(big, cfg)
    with pytest.raises(BadRequest, match="nests deeper"):
        ow.parse_chat(
            b"[" * 40 + b"]" * 40, cfg=cfg, models=MODELS, request_id="h", received_at_s=0.0
        )
    with pytest.raises(BadRequest, match="not valid JSON"):
        ow.parse_chat(b'{"a": NaN}', cfg=cfg, models=MODELS, request_id="h", received_at_s=0.0)
    # an unpaired surrogate escape is refused as on MQTT (it once failed later, re-encoding)
    lone = b'{"model": "local", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    with pytest.raises(BadRequest, match="unpaired UTF-16 surrogate"):
        ow.parse_chat(lone, cfg=cfg, models=MODELS, request_id="h", received_at_s=0.0)


@pytest.mark.parametrize(
    ("err", "status"),
    [(BadRequest("x"), 400), (TooLarge("x"), 413), (Busy("x"), 429), (Blocked("x"), 403)],
)
def test_errors_have_openai_bodies_and_statuses(err: EdgedError, status: int) -> None:
    assert ow.STATUS[err.code] == status
    body = ow.error_body(err)
    assert body["error"]["code"] == err.code and body["error"]["message"] == "x"


class Windows(NullMeter):
    """A meter that records which windows are open."""

    def __init__(self) -> None:
        super().__init__()
        self.open: set[str] = set()

    def begin(self, key: str) -> None:
        self.open.add(key)

    def end(self, key: str, completion_tokens: int) -> EnergyReport:
        self.open.discard(key)
        return super().end(key, completion_tokens)


def test_a_cancelled_request_closes_its_stream_and_its_energy_window() -> None:
    req = parse({"model": "local", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    backend = Script(
        [Started(), TextDelta("a"), TextDelta("b"), Finished("stop", Usage(1, 2))], 0.5
    )
    backends = {"local": backend}
    router = Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends)
    meter = Windows()
    p = Pipeline(guardian=PassGuardian(), router=router, backends=backends, meter=meter)

    async def go() -> None:
        task = asyncio.create_task(p.handle(req, Sink()))
        await asyncio.sleep(0.7)  # one chunk out
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert backend.closed and not meter.open
