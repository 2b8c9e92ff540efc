"""The OpenAI-compatible HTTP front door (docs/http.md): an ingress beside MQTT.

uvicorn (h11) parses HTTP; this module is a plain ASGI app on the daemon's event loop. A
chat request is validated by :mod:`edged.ingress.openai_wire` (the MQTT checks), admitted by
:meth:`edged.ingress.service.Ingress.admit` (the same queue and limit) and served by the
same handler (Pipeline.handle) into an :class:`HttpSink`: one final outcome, as on MQTT.
A client that disconnects cancels its request's task; closing the backend's stream stops
the generation (edged.backends.base).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn

from edged.config import Config
from edged.errors import BadRequest, EdgedError, TooLarge
from edged.ingress import openai_wire as ow
from edged.ingress.responder import FinalSink
from edged.types import Request, Result

log = logging.getLogger("edged.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Admit = Callable[[Request, FinalSink], "asyncio.Task[None]"]


class _Gone(Exception):
    """The client disconnected."""


class HttpSink:
    """One request's replies, queued for its connection; exactly one final outcome."""

    def __init__(self) -> None:
        self.final: str | None = None
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def chunk(self, text: str) -> None:
        """A streamed piece of text."""
        if self.final is None:
            self.queue.put_nowait(("chunk", text))

    def result(self, result: Result) -> None:
        """The final result."""
        if self.final is None:
            self.final = "result"
            self.queue.put_nowait(("result", result))

    def error(self, err: EdgedError) -> None:
        """The final error."""
        if self.final is None:
            self.final = "error"
            self.queue.put_nowait(("error", err))


class HttpFront:
    """The ASGI app: ``/v1/chat/completions``, ``/v1/models``, ``/healthz``."""

    def __init__(
        self,
        cfg: Config,
        admit: Admit,
        models: Callable[[], Sequence[str]],
        health: Callable[[], dict[str, Any]],
        *,
        api_key: str | None,
        cancel: Callable[[str], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self._admit = admit
        self._cancel = cancel
        self._models = models
        self._health = health
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request."""
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method == "GET":
            await _json(send, 200, self._health())
            return
        if path.startswith("/v1/") and not self._authorized(scope):
            err = BadRequest("missing or wrong API key (Authorization: Bearer <key>)")
            await _json(send, 401, ow.error_body(err, 401) | {}, [(b"www-authenticate", b"Bearer")])
            return
        if path == "/v1/models" and method == "GET":
            created = ow.now_s()
            data = [
                {"id": m, "object": "model", "created": created, "owned_by": "edged"}
                for m in self._models()
            ]
            await _json(send, 200, {"object": "list", "data": data})
        elif path == "/v1/chat/completions" and method == "POST":
            await self._chat(scope, receive, send)
        elif path in ("/v1/models", "/v1/chat/completions", "/healthz"):
            await _json(send, 405, ow.error_body(BadRequest(f"{method} is not allowed"), 405))
        else:
            await _json(send, 404, ow.error_body(BadRequest(f"no such endpoint: {path}"), 404))

    def _authorized(self, scope: Scope) -> bool:
        if self._key is None:
            return True
        for k, v in scope["headers"]:
            if k == b"authorization" and v[:7].lower() == b"bearer ":
                return hmac.compare_digest(v[7:].strip(), self._key)
        return False

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        received_at_s = time.monotonic()
        limit = self.cfg.ingress.max_payload_bytes
        timeout_s = self.cfg.http.body_timeout_s
        try:
            raw = await asyncio.wait_for(_read_body(scope, receive, limit), timeout_s)
        except _Gone:
            return
        except asyncio.TimeoutError:
            log.info("event=http_body_timeout timeout_s=%.1f", timeout_s)
            err = BadRequest(f"the request body did not arrive within {timeout_s:g} s")
            await _json(send, 408, ow.error_body(err, 408), [(b"connection", b"close")])
            return
        except TooLarge as e:
            await _error(send, e)
            return
        request_id = f"http-{uuid.uuid4().hex}"
        try:
            req = ow.parse_chat(
                raw,
                cfg=self.cfg,
                models=self._models(),
                request_id=request_id,
                received_at_s=received_at_s,
            )
            sink = HttpSink()
            task = self._admit(req, sink)
        except EdgedError as e:
            log.info("event=request_rejected id=%s code=%s via=http", request_id, e.code)
            await _error(send, e)
            return
        model = str(ow.parse_json_model(raw))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            if req.stream:
                await self._stream(
                    send,
                    sink=sink,
                    gone=gone,
                    request_id=req.id,
                    model=model,
                    include_usage=ow.include_usage(raw),
                )
            else:
                kind, value = await _next(sink, gone)
                if kind == "error":
                    await _error(send, value)
                else:
                    await _json(send, 200, ow.completion(value, model, ow.now_s()))
        except (_Gone, OSError):
            log.info("event=http_client_gone id=%s action=cancel", req.id)
        finally:
            gone.cancel()
            if not task.done():
                await self._stop(task, req.id)

    async def _stop(self, task: asyncio.Task[None], request_id: str) -> None:
        """End a request whose client is gone: a clean cancel where the ingress offers one
        (a ``cancelled`` outcome, given 2 s), else, or then, the task is cancelled (the
        pipeline's stream closes; the backend stops generating)."""
        if self._cancel is not None and self._cancel(request_id):
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 2.0)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _stream(
        self,
        send: Send,
        *,
        sink: HttpSink,
        gone: asyncio.Future[None],
        request_id: str,
        model: str,
        include_usage: bool,
    ) -> None:
        kind, value = await _next(sink, gone)
        if kind == "error":  # before any text: a proper status (guardian refusal: 403)
            await _error(send, value)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        created = ow.now_s()
        first = True
        while True:
            if kind == "chunk":
                delta: dict[str, Any] = {"content": value}
                if first:
                    delta["role"] = "assistant"
                    first = False
                await _event(send, ow.chunk(request_id, model, created, delta))
            elif kind == "result":
                if first:
                    await _event(send, ow.chunk(request_id, model, created, {"role": "assistant"}))
                for c in ow.final_chunks(value, model, created, include_usage):
                    await _event(send, c)
                break
            else:  # an error after text went out: an error event, as OpenAI streams do
                await _event(send, ow.error_body(value))
                break
            kind, value = await _next(sink, gone)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for k, v in scope["headers"]:
        if k == b"content-length" and v.isdigit() and int(v) > limit:
            raise TooLarge(f"payload is {int(v)} bytes; the limit is {limit}")
    body = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise _Gone
        body += msg.get("body", b"")
        if len(body) > limit:
            raise TooLarge(f"payload is over {limit} bytes; the limit is {limit}")
        if not msg.get("more_body"):
            return bytes(body)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _next(sink: HttpSink, gone: asyncio.Future[None]) -> tuple[str, Any]:
    if not sink.queue.empty():
        return sink.queue.get_nowait()
    get = asyncio.ensure_future(sink.queue.get())
    waiting: set[asyncio.Future[Any]] = {get, gone}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if get.done():
        return get.result()
    get.cancel()
    raise _Gone


async def _json(
    send: Send, status: int, obj: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = ow.dumps(obj)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, err: EdgedError) -> None:
    status = ow.STATUS.get(err.code, 500)
    headers = [(b"retry-after", b"1")] if err.code == "busy" else []
    await _json(send, status, ow.error_body(err, status), headers)


async def _event(send: Send, obj: dict[str, Any]) -> None:
    await send(
        {
            "type": "http.response.body",
            "body": b"data: " + ow.dumps(obj) + b"\n\n",
            "more_body": True,
        }
    )


class HttpServer:
    """Runs :class:`HttpFront` with uvicorn on the daemon's loop."""

    def __init__(self, front: HttpFront) -> None:
        cfg = front.cfg.http
        self.front = front
        self.server = uvicorn.Server(
            uvicorn.Config(
                front,
                host=cfg.host,
                port=cfg.port,
                http="h11",
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                date_header=False,
                timeout_keep_alive=int(max(1, cfg.keepalive_s)),
                timeout_graceful_shutdown=3,
            )
        )
        self.started = False

    async def start(self) -> bool:
        """Listen; False (logged) when the address cannot be bound: MQTT goes on serving."""
        cfg = self.front.cfg.http
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((cfg.host, cfg.port))
        except OSError as e:  # bound here: uvicorn would sys.exit() from inside the loop
            sock.close()
            log.error("event=http_not_started host=%s port=%d error=%r", cfg.host, cfg.port, str(e))
            return False
        # uvicorn's startup and shutdown without its serve(): serve() would take the
        # daemon's signals and wake the loop ten times a second (its main_loop tick)
        config = self.server.config
        config.load()
        self.server.lifespan = config.lifespan_class(config)
        try:
            await self.server.startup(sockets=[sock])
        except (OSError, SystemExit) as e:
            sock.close()
            log.error("event=http_not_started error=%r", str(e))
            return False
        self.started = True
        log.info("event=http_started host=%s port=%d", cfg.host, self.port)
        return True

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for 0)."""
        for s in self.server.servers:
            for sock in s.sockets:
                return int(sock.getsockname()[1])
        return self.front.cfg.http.port

    async def stop(self) -> None:
        """Stop listening; connections still open get up to 3 s."""
        if not self.started:
            return
        self.started = False
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.shutdown(), 10.0)
