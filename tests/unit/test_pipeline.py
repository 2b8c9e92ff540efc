"""The pipeline's ordering and its one-final-reply rule, with a scripted backend.

The backend here is a test double on purpose: these tests are about the pipeline's own
logic (timing, errors, deadlines); the real model is exercised in tests/integration.
"""

from __future__ import annotations

import asyncio
import time

from edged.config import PolicyConfig, RouterConfig
from edged.energy.meter import NullMeter
from edged.errors import BadRequest, EdgedError
from edged.guardian import PassGuardian
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.types import (
    ChatMessage,
    Finished,
    ReplyAddress,
    Request,
    Result,
    Started,
    StreamEvent,
    TextDelta,
    Usage,
)
from tests.unit.doubles import Script, Sink


def request(stream: bool = True, deadline_s: float | None = None) -> Request:
    now = time.monotonic()
    return Request(
        id="p1",
        messages=(ChatMessage("user", "hi"),),
        max_tokens=8,
        temperature=0.0,
        stream=stream,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=now,
        deadline_at_s=None if deadline_s is None else now + deadline_s,
    )


def run(backend: Script, req: Request) -> Sink:
    sink = Sink()
    backends = {"local": backend}
    router = Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends)
    p = Pipeline(guardian=PassGuardian(), router=router, backends=backends, meter=NullMeter())
    asyncio.run(p.handle(req, sink))
    return sink


OK_EVENTS: list[StreamEvent | Exception] = [
    Started(),
    TextDelta("Hel"),
    TextDelta("lo"),
    Finished("stop", Usage(5, 2)),
]


def test_streams_chunks_then_one_result_with_timing() -> None:
    sink = run(Script(OK_EVENTS, delay_s=0.01), request())
    assert sink.chunks == ["Hel", "lo"]
    assert len(sink.finals) == 1
    res = sink.finals[0]
    assert isinstance(res, Result)
    assert res.text == "Hello" and res.finish_reason == "stop" and res.usage.prompt_tokens == 5
    t = res.timing
    assert t.queue_ms is not None and t.ttft_ms is not None
    assert 0 <= t.queue_ms <= t.ttft_ms <= t.total_ms
    assert res.energy.joules is None and res.energy.reason
    assert res.route.backend == "local"


def test_non_streaming_sends_no_chunks() -> None:
    sink = run(Script(OK_EVENTS), request(stream=False))
    assert sink.chunks == [] and isinstance(sink.finals[0], Result)


def test_backend_error_becomes_one_error_reply() -> None:
    sink = run(Script([Started(), TextDelta("x"), BadRequest("prompt too long")]), request())
    assert len(sink.finals) == 1
    err = sink.finals[0]
    assert isinstance(err, EdgedError) and err.code == "bad_request"


def test_unexpected_exception_is_internal_without_details() -> None:
    sink = run(Script([Started(), RuntimeError("secret detail")]), request())
    err = sink.finals[0]
    assert isinstance(err, EdgedError) and err.code == "internal"
    assert "secret" not in err.message


def test_stream_ending_without_finished_is_internal() -> None:
    sink = run(Script([Started(), TextDelta("x")]), request())
    err = sink.finals[0]
    assert isinstance(err, EdgedError) and err.code == "internal"


def test_deadline_stops_the_backend_and_replies_timeout() -> None:
    backend = Script(
        [Started()] + [TextDelta("x")] * 100 + [Finished("stop", Usage(1, 100))], delay_s=0.01
    )
    sink = run(backend, request(deadline_s=0.1))
    assert len(sink.finals) == 1
    err = sink.finals[0]
    assert isinstance(err, EdgedError) and err.code == "timeout"
    assert backend.closed
    assert 0 < len(sink.chunks) < 100
