"""Test doubles for the pipeline's own logic: a backend that plays a script of stream events
(an exception in the script is raised there), and a reply sink that records what was sent.
The real backends are exercised in tests/integration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from edged.errors import EdgedError
from edged.types import BackendStats, Request, Result, StreamEvent


class Script:
    """Streams ``events`` (pausing ``delay_s`` before each); ``closed`` once the stream was
    closed, however it ended."""

    name = "local"

    def __init__(
        self,
        events: list[StreamEvent | Exception],
        delay_s: float = 0.0,
        supports_tools: bool = True,
    ) -> None:
        self.events = events
        self.delay_s = delay_s
        self.supports_tools = supports_tools
        self.closed = False

    #: In memory now (telemetry's ``resident``)
    resident = True

    def healthy(self) -> bool:
        return True

    def stats(self) -> BackendStats:
        return BackendStats()

    async def restart(self) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        try:
            for ev in self.events:
                await asyncio.sleep(self.delay_s)
                if isinstance(ev, Exception):
                    raise ev
                yield ev
        finally:
            self.closed = True


class Sink:
    """The chunks and the final replies (a result or an error) of one request."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.finals: list[Result | EdgedError] = []

    def chunk(self, text: str) -> None:
        self.chunks.append(text)

    def result(self, result: Result) -> None:
        self.finals.append(result)

    def error(self, err: EdgedError) -> None:
        self.finals.append(err)
