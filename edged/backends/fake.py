"""A scripted backend for tests and demos: no model, deterministic output.

It answers with the last user message. When that message is a JSON list of strings, each
string is streamed as one chunk, so a test can choose exactly where token boundaries fall
(that is how the guardian's stream filter is tested through the real daemon). Enable it
with ``[local] backend = "fake"``; never on a device that should answer questions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import ClassVar

from edged.backends.base import BackendSpec, register
from edged.types import (
    BackendStats,
    Finished,
    FinishReason,
    Request,
    Started,
    StreamEvent,
    TextDelta,
    Usage,
)


@register("fake")
class FakeBackend:
    """Streams the last user message back, chunked as the message says."""

    needs_model_file: ClassVar[bool] = False
    #: Tools, tool_choice and response_format are honoured (docs/tools.md).
    supports_tools: ClassVar[bool] = True

    def __init__(self, *, name: str, delay_s: float = 0.0) -> None:
        self.name = name
        self._delay_s = delay_s

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> FakeBackend:
        """``[local] fake_delay_s`` between chunks."""
        return cls(name=spec.name, delay_s=spec.cfg.local.fake_delay_s)

    async def start(self) -> None:
        """Nothing to load."""

    async def close(self) -> None:
        """Nothing to free."""

    def healthy(self) -> bool:
        """Always ready."""
        return True

    def stats(self) -> BackendStats:
        """Nothing measured."""
        return BackendStats()

    async def restart(self) -> None:
        """Never stuck: nothing to restart."""

    @staticmethod
    def chunks(request: Request) -> list[str]:
        """The pieces the answer is streamed in."""
        text = next(m.content for m in reversed(request.messages) if m.role == "user")
        try:
            parsed = json.loads(text)
        except ValueError:
            return [text]
        if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
            return parsed
        return [text]

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """One Started, one TextDelta per chunk (up to max_tokens), one Finished."""
        yield Started()
        pieces = self.chunks(request)
        n = 0
        for piece in pieces[: request.max_tokens]:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            n += 1
            yield TextDelta(piece, 1)
        finish: FinishReason = "length" if len(pieces) > request.max_tokens else "stop"
        yield Finished(finish, Usage(prompt_tokens=0, completion_tokens=n))
