"""A scripted backend for tests and demos: no model, deterministic output.

It answers with the last user message. When that message is a JSON list of strings, each
string is streamed as one chunk, so a test can choose exactly where token boundaries fall
(that is how the guardian's stream filter is tested through the real daemon). When it is a
JSON object with ``tool_calls`` (a list of ``{"name", "arguments", "id"?}``, ``arguments`` a
JSON text or any value, which is dumped), it streams ``text`` if given and then makes those
calls exactly as written, valid or not: that is how the pipeline's checks are tested. A
last turn from a tool is answered with ``tool said: <its content>``. Enable it
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
    ToolCall,
    ToolCalls,
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

    @property
    def resident(self) -> bool:
        """Nothing to load: always resident."""
        return True

    async def restart(self) -> None:
        """Never stuck: nothing to restart."""

    @staticmethod
    def chunks(request: Request) -> list[str]:
        """The pieces the answer is streamed in."""
        last = request.messages[-1]
        if last.role == "tool":
            return [f"tool said: {last.content}"]
        text = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        try:
            parsed = json.loads(text)
        except ValueError:
            return [text]
        if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
            return parsed
        if isinstance(parsed, dict) and isinstance(parsed.get("text"), str):
            return [parsed["text"]]
        if isinstance(parsed, dict) and "tool_calls" in parsed:
            return []
        return [text]

    @staticmethod
    def calls(request: Request) -> tuple[ToolCall, ...]:
        """The calls the last user turn scripts, if any."""
        if request.messages[-1].role != "user":
            return ()
        try:
            parsed = json.loads(request.messages[-1].content)
        except ValueError:
            return ()
        if not isinstance(parsed, dict) or not isinstance(parsed.get("tool_calls"), list):
            return ()
        out = []
        for i, c in enumerate(parsed["tool_calls"]):
            if not isinstance(c, dict):
                continue
            args = c.get("arguments", {})
            out.append(
                ToolCall(
                    id=str(c.get("id", f"call_fake_{i}")),
                    name=str(c.get("name", "")),
                    arguments=args if isinstance(args, str) else json.dumps(args),
                )
            )
        return tuple(out)

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """One Started, one TextDelta per chunk (up to max_tokens), the scripted calls if
        any, one Finished."""
        yield Started()
        pieces = self.chunks(request)
        n = 0
        for piece in pieces[: request.max_tokens]:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            n += 1
            yield TextDelta(piece, 1)
        calls = self.calls(request)
        if calls:
            yield ToolCalls(calls)
            yield Finished("tool_calls", Usage(prompt_tokens=0, completion_tokens=n + 1))
            return
        finish: FinishReason = "length" if len(pieces) > request.max_tokens else "stop"
        yield Finished(finish, Usage(prompt_tokens=0, completion_tokens=n))
