"""The responder: publishes one request's chunks and its single final reply."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from edged.errors import EdgedError
from edged.ingress import wire
from edged.types import ReplyAddress, Result

log = logging.getLogger("edged.responder")


class Publisher(Protocol):
    """The part of the MQTT link the responder uses."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
        expiry_s: int | None = None,
    ) -> object:
        """Queue one message."""
        ...


class FinalSink(Protocol):
    """A reply sink that knows whether its final reply went out (the responder, or the
    HTTP front door's)."""

    final: str | None

    def chunk(self, text: str) -> None:
        """A streamed piece of text."""
        ...

    def result(self, result: Result) -> None:
        """The final result."""
        ...

    def error(self, err: EdgedError) -> None:
        """The final error."""
        ...


class Responder:
    """Replies for one request: chunks in order, then exactly one result or error."""

    def __init__(
        self,
        publisher: Publisher,
        request_id: str | None,
        address: ReplyAddress,
        qos: int = 1,
        flush_s: float = 0.0,
    ) -> None:
        self._pub = publisher
        self.request_id = request_id
        self.address = address
        self._qos = qos
        self.seq = 0
        self.final: str | None = None
        # chunk coalescing (ingress.chunk_flush_ms): text held, when the last chunk went,
        # and the timer that sends what is held at the latest flush_s after it came
        self._flush_s = flush_s
        self._held: list[str] = []
        self._sent_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def _send(self, payload: bytes) -> None:
        self._pub.publish(
            self.address.topic,
            payload,
            qos=self._qos,
            correlation_data=self.address.correlation_data,
        )

    def chunk(self, text: str) -> None:
        """Publish the next piece of streamed text (with coalescing on: the first at once,
        then at most one chunk per ``flush_s``, text that comes sooner held until then)."""
        if self.final is not None or self.request_id is None:
            return
        if self._flush_s <= 0 or (self.seq == 0 and not self._held):
            self._publish_chunk(text)
            return
        self._held.append(text)
        wait_s = self._sent_at + self._flush_s - time.monotonic()
        if wait_s <= 0:  # at most one chunk per interval: this one may go now
            self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + wait_s, self.flush)

    def flush(self) -> None:
        """Send the text held back by coalescing now, as one chunk."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held and self.final is None:
            text, self._held = "".join(self._held), []
            self._publish_chunk(text)

    def _publish_chunk(self, text: str) -> None:
        assert self.request_id is not None
        self._send(wire.encode_chunk(self.request_id, self.seq, text))
        self.seq += 1
        self._sent_at = time.monotonic()

    def result(self, result: Result) -> None:
        """Publish the final result (ignored, with a log line, if a final reply was sent)."""
        self.flush()  # every chunk before the final
        if self._finish("result"):
            self._send(wire.encode_result(result))

    def error(self, err: EdgedError) -> None:
        """Publish the final error (ignored, with a log line, if a final reply was sent)."""
        self.flush()  # what was released goes out, in order, before the final
        if self._finish("error"):
            self._send(wire.encode_error(self.request_id, err))

    def _finish(self, kind: str) -> bool:
        if self.final is not None:
            log.error(
                "event=second_final_reply_dropped id=%s first=%s second=%s",
                self.request_id,
                self.final,
                kind,
            )
            return False
        self.final = kind
        return True
