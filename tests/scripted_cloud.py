"""A scripted OpenAI-compatible server on loopback, for the cloud backend's tool-call tests.

llama.cpp's server (tests.helpers.CloudServer) is a real cloud, but what it streams is the
model's choice. This one streams exactly what a test tells it to: text, tool calls split
into fragments at every character or UTF-16 code unit (inside strings and ``\\u`` escapes),
several calls by index, interleaved or not, bad arguments, unknown tools, a stream cut
before its ``finish_reason``, a non-streamed ``chat.completion``. It records the JSON body
of every request, so a test can assert what edged sent.

It speaks enough HTTP/1.1 for the OpenAI SDK (keep-alive, chunked ``text/event-stream``)
and runs its own asyncio loop in a thread, so sync tests and ``asyncio.run`` tests can
both use it. Answers are queued with :meth:`ScriptedCloud.script` and used one per request,
in order; with none queued it streams ``"ok"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Chunk = dict[str, Any]


# --- what to stream ---------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    choices: bool = True,
) -> Chunk:
    """One ``chat.completion.chunk`` with choice 0 holding ``delta`` and ``finish``."""
    out: Chunk = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def text(*pieces: str) -> list[Chunk]:
    """Content deltas, one chunk each."""
    return [chunk({"content": p}) for p in pieces]


def finish(reason: str = "stop", usage: dict[str, int] | None = None) -> list[Chunk]:
    """The last chunk: an empty delta with ``finish_reason`` (and usage, when given)."""
    return [chunk({}, finish=reason, usage=usage)]


@dataclass(frozen=True)
class Call:
    """A tool call to stream: ``arguments`` is sent as is (any text, valid JSON or not)."""

    name: str
    arguments: str
    id: str | None = None


def pieces(text: str, size: int = 1, units: str = "char") -> list[str]:
    """``text`` cut every ``size`` characters, or every ``size`` UTF-16 code units
    (``units="utf16"``: a character outside the BMP is cut between its surrogates, each
    half then JSON-escaped alone, as a server that splits UTF-16 strings sends it)."""
    if units == "char":
        return [text[i : i + size] for i in range(0, len(text), size)]
    raw = text.encode("utf-16-le", "surrogatepass")
    step = 2 * size
    return [
        raw[i : i + step].decode("utf-16-le", "surrogatepass") for i in range(0, len(raw), step)
    ]


def call_fragments(
    calls: Sequence[Call],
    size: int = 1,
    units: str = "char",
    interleave: bool = False,
    first: int = 0,
) -> list[Chunk]:
    """The ``delta.tool_calls`` chunks of ``calls`` (indexes from ``first``): a head
    fragment with id, type and name (arguments ``""``), then the arguments in pieces of
    ``size``, one fragment per chunk. ``interleave``: the calls' pieces alternate."""
    streams: list[list[Chunk]] = []
    for i, c in enumerate(calls, start=first):
        head: dict[str, Any] = {
            "index": i,
            "type": "function",
            "function": {"name": c.name, "arguments": ""},
        }
        if c.id is not None:
            head["id"] = c.id
        frags = [head] + [
            {"index": i, "function": {"arguments": p}} for p in pieces(c.arguments, size, units)
        ]
        streams.append([chunk({"tool_calls": [f]}) for f in frags])
    if not interleave:
        return [ch for s in streams for ch in s]
    out: list[Chunk] = []
    for row in range(max(len(s) for s in streams)):
        out.extend(s[row] for s in streams if row < len(s))
    return out


def completion(
    content: str | None = None,
    calls: Sequence[Call] = (),
    finish_reason: str = "stop",
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` (message with ``tool_calls``, no indexes)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    out: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


@dataclass
class Answer:
    """What to send for one request: ``events`` (chunks, or raw ``bytes`` sent as an SSE
    ``data:`` payload) then ``data: [DONE]``; or, with ``cut``, the connection reset after
    the events (no ``[DONE]``, no end of the chunked body); or ``body``, one JSON
    ``chat.completion`` (application/json) instead of a stream; or ``status`` with an
    error body."""

    events: list[Chunk | bytes] = field(default_factory=list)
    cut: bool = False
    body: dict[str, Any] | None = None
    status: int = 200
    #: Seconds between events (a server that is slow but answering).
    pace_s: float = 0.0


def stream(*parts: Iterable[Chunk | bytes], cut: bool = False, pace_s: float = 0.0) -> Answer:
    """An answer streaming ``parts`` in order."""
    return Answer(events=[e for p in parts for e in p], cut=cut, pace_s=pace_s)


# --- the server -------------------------------------------------------------------------------


class ScriptedCloud:
    """The server (see the module docstring). ``bodies``: the JSON body of every request it
    received, in order."""

    def __init__(self) -> None:
        self.port = 0
        self.bodies: list[dict[str, Any]] = []
        self._answers: queue.Queue[Answer] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._live: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *answers: Answer) -> None:
        """Queue answers, one per request to come, in order."""
        for a in answers:
            self._answers.put(a)

    def clear(self) -> None:
        """Forget the recorded bodies and any answers still queued."""
        self.bodies.clear()
        with contextlib.suppress(queue.Empty):
            while True:
                self._answers.get_nowait()

    @property
    def last(self) -> dict[str, Any]:
        """The body of the last request."""
        return self.bodies[-1]

    def start(self) -> None:
        ready: queue.Queue[BaseException | None] = queue.Queue()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0)
                )
            except BaseException as e:
                ready.put(e)
                loop.close()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            ready.put(None)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="scripted-cloud", daemon=True)
        self._thread.start()
        err = ready.get(timeout=10)
        if err is not None:
            raise RuntimeError(f"scripted cloud could not listen: {err!r}")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._server = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._live):
            w.transport.abort()
        self._live.clear()

    # --- inside the server's loop ---

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._live.add(writer)
        try:
            while await self._one(reader, writer):  # keep-alive: one request after another
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            writer.transport.abort()
        finally:
            self._live.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is done."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        raw = await reader.readexactly(length)
        if method != "POST" or not path.endswith("/chat/completions"):
            self._send(writer, 404, "application/json", b'{"error": {"message": "not found"}}')
            await writer.drain()
            return True
        self.bodies.append(json.loads(raw))
        try:
            answer = self._answers.get_nowait()
        except queue.Empty:
            answer = stream(text("ok"), finish("stop"))
        if answer.status != 200:
            err = {"error": {"message": f"scripted {answer.status}", "type": "server_error"}}
            self._send(writer, answer.status, "application/json", json.dumps(err).encode())
            await writer.drain()
            return True
        if answer.body is not None:
            self._send(writer, 200, "application/json", json.dumps(answer.body).encode())
            await writer.drain()
            return True
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for n, ev in enumerate(answer.events):
            if answer.pace_s and n:
                await asyncio.sleep(answer.pace_s)
            data = ev if isinstance(ev, bytes) else json.dumps(ev).encode()
            await self._chunk(writer, b"data: " + data + b"\n\n")
        if answer.cut:
            writer.transport.abort()  # RST before [DONE] and before the end of the body
            return False
        await self._chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    @staticmethod
    def _send(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes) -> None:
        reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


def cloud_env(cloud: ScriptedCloud, **extra: str) -> dict[str, str]:
    """A daemon's environment for serving from ``cloud``: the echoing fake local backend,
    the cloud backend on the scripted server, no retry; ``extra`` adds or overrides."""
    return {
        "EDGED_LOCAL__BACKEND": "fake",
        "EDGED_CLOUD__ENABLED": "true",
        "EDGED_CLOUD__BASE_URL": cloud.base_url,
        "EDGED_CLOUD__RETRIES": "0",
        **extra,
    }
