"""Barge-in in the pipeline and on the wire: a client's cancel ends a request with its one
``cancelled`` result; a shutdown or a deadline still ends it as before.

The backend is the scripted double: these tests are about the pipeline's and the cancel
scope's own logic; the real model and the scripted remote are in
tests/integration/test_cancel_daemon.py.
"""

from __future__ import annotations

import asyncio

import pytest

from edged.aio import CancelScope, set_cancel_scope
from edged.config import PolicyConfig, RouterConfig
from edged.energy.meter import NullMeter
from edged.errors import EdgedError, Timeout
from edged.guardian import PassGuardian
from edged.ingress import wire
from edged.pipeline import Pipeline
from edged.router.router import Router
from edged.types import Finished, Result, Started, StreamEvent, TextDelta, Usage
from tests.unit.doubles import Script, Sink
from tests.unit.test_pipeline import request

SLOW: list[StreamEvent | Exception] = [
    Started(),
    TextDelta("one "),
    TextDelta("two "),
    *[TextDelta("more ") for _ in range(50)],
    Finished("stop", Usage(5, 52)),
]


def pipeline(backend: Script) -> Pipeline:
    backends = {"local": backend}
    router = Router(RouterConfig(), {"voice-agent": PolicyConfig()}, backends)
    return Pipeline(guardian=PassGuardian(), router=router, backends=backends, meter=NullMeter())


async def serve(
    p: Pipeline, sink: Sink, scope: CancelScope, deadline_s: float | None = None
) -> None:
    set_cancel_scope(scope)
    await p.handle(request(deadline_s=deadline_s), sink)


def cancel_after(backend: Script, chunks: int | None) -> tuple[Sink, bool]:
    """Serve; cancel once ``chunks`` chunks went out (None: before serving begins). The
    sink, and whether the task went on after the handler (it must never be cancelled)."""
    sink = Sink()
    scope = CancelScope()

    async def main() -> bool:
        if chunks is None:
            scope.request()
        task = asyncio.create_task(serve(pipeline(backend), sink, scope))
        for _ in range(1000):
            if chunks is None or len(sink.chunks) >= chunks or task.done():
                break
            await asyncio.sleep(0.001)
        if chunks is not None:
            assert scope.request()
            assert not scope.request()  # a second cancel changes nothing
        await task
        await asyncio.sleep(0.02)  # nothing may follow the final
        return not task.cancelled()

    return sink, asyncio.run(main())


def only_result(sink: Sink) -> Result:
    assert len(sink.finals) == 1, sink.finals
    res = sink.finals[0]
    assert isinstance(res, Result), res
    return res


def test_a_cancel_mid_stream_ends_with_one_cancelled_result_of_the_text_released() -> None:
    backend = Script(SLOW, delay_s=0.005)
    sink, finished = cancel_after(backend, 2)
    res = only_result(sink)
    assert finished
    assert res.finish_reason == "cancelled"
    assert res.text == "".join(sink.chunks)
    assert res.text.startswith("one two ")
    assert len(sink.chunks) < 52
    assert res.usage.completion_tokens == len(sink.chunks)
    assert res.usage.prompt_tokens is None  # closed at once: the backend did not say
    assert backend.closed


def test_a_cancel_before_the_backend_begins_never_starts_it() -> None:
    backend = Script(SLOW, delay_s=0.005)
    sink, _ = cancel_after(backend, None)
    res = only_result(sink)
    assert res.finish_reason == "cancelled" and res.text == "" and sink.chunks == []
    assert res.usage.completion_tokens == 0
    assert res.timing.ttft_ms is None


def test_a_deadline_is_still_a_timeout_and_shutdown_still_cancels() -> None:
    sink = Sink()

    async def deadline() -> None:
        await serve(pipeline(Script(SLOW, delay_s=0.01)), sink, CancelScope(), deadline_s=0.05)

    asyncio.run(deadline())
    assert len(sink.finals) == 1 and isinstance(sink.finals[0], Timeout)

    async def shutdown() -> None:
        task = asyncio.create_task(serve(pipeline(Script(SLOW, 0.01)), Sink(), CancelScope()))
        await asyncio.sleep(0.03)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(shutdown())


def test_a_cancel_as_the_stream_ends_is_absorbed() -> None:
    """A cancel that lands after the last event is never felt outside the backend stage."""
    for delay in (0.0, 0.001):
        sink, finished = cancel_after(Script(SLOW[:3] + SLOW[-1:], delay_s=delay), 2)
        assert finished
        assert len(sink.finals) == 1 and not isinstance(sink.finals[0], EdgedError)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"id": 5}',
        b'{"id": ""}',
        b'{"id": "a b"}',
        b'{"id": "a", "why": "x"}',
        b'{"id": "a", "id": "b"}',
        b'{"id": "' + b"x" * 2000 + b'"}',
        b"\xff\xfe",
    ],
)
def test_a_malformed_cancel_is_refused_with_a_reason(payload: bytes) -> None:
    with pytest.raises(ValueError, match="cancel"):
        wire.parse_cancel(payload)


def test_a_cancel_names_one_request() -> None:
    assert wire.parse_cancel(b'{"id": "req-1.a:b_c"}') == "req-1.a:b_c"


def test_the_protocol_doc_states_the_cancel_facts() -> None:
    """docs/protocol.md names the topic edged subscribes, the size limit, and every reason a
    cancel is ignored with, as the code spells them."""
    from pathlib import Path

    from edged.mqtt.topics import Topics

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = doc[doc.index("## Cancelling a request (barge-in)") :]
    section = section[: section.index("\n## ", 5)]
    assert Topics("edged", "<device_id>").cancel in section
    assert f"{wire.MAX_CANCEL_BYTES:,} bytes" in section
    src = (Path(__file__).resolve().parents[2] / "edged" / "ingress" / "service.py").read_text()
    for reason in ("malformed", "not_in_flight", "already_cancelled"):
        assert reason in section and reason in src
    assert "acl" in section.lower()
