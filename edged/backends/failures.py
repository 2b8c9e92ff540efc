"""What went wrong with a cloud request, told by exception type, never by message.

:func:`classify` reads the OpenAI SDK's exception types (``APIStatusError``,
``APITimeoutError``, ``APIConnectionError``, ...) and, along the exception's chain of
causes, the types of the HTTP library the SDK runs on (``httpx``; ``httpx2`` from openai 3:
:func:`transport` finds it from the SDK), which is what a stream being read raises as it
is. Messages and bodies are never read: they may echo the prompt or the request headers.
"""

from __future__ import annotations

import functools
import importlib
import time
from dataclasses import dataclass
from types import ModuleType

from edged.backends.retry_after import parse_retry_after


@dataclass(frozen=True, slots=True)
class Failure:
    """A short, safe description of one failed attempt."""

    message: str
    retryable: bool
    status: int | None = None
    #: Seconds the server asked us to wait (429/503 with Retry-After), else None.
    retry_after_s: float | None = None


class BadStream(Exception):
    """The stream's content broke the protocol (raised by the cloud backend, classified
    here)."""


@functools.cache
def transport() -> ModuleType:
    """The HTTP library under the SDK: the package of the class its default async client
    derives from (``httpx.AsyncClient``, or ``httpx2.AsyncClient`` from openai 3)."""
    import openai

    base = openai.DefaultAsyncHttpxClient.__mro__[1]
    return importlib.import_module(base.__module__.split(".")[0])


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, outermost first, each once."""
    out: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return out


def classify(exc: Exception) -> Failure:
    """A short, safe description of a failure, from types and status codes only."""
    import openai

    if isinstance(exc, BadStream):
        return Failure(f"cloud: {exc.args[0]}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if 400 <= status < 500 and status not in (408, 429):
            return Failure(f"cloud: HTTP {status}", retryable=False, status=status)
        wait_s = None
        if status in (429, 503):
            wait_s = parse_retry_after(exc.response.headers, time.time())
        return Failure(f"cloud: HTTP {status}", retryable=True, status=status, retry_after_s=wait_s)
    chain = _chain(exc)
    http = transport()

    def caused_by(kind: type[BaseException]) -> bool:
        return any(isinstance(e, kind) for e in chain)

    if isinstance(exc, openai.APITimeoutError) or caused_by(http.TimeoutException):
        if caused_by(http.ConnectTimeout):
            return Failure("cloud: connect timeout", retryable=True)
        if caused_by(http.PoolTimeout):
            return Failure("cloud: pool timeout", retryable=True)
        if caused_by(http.WriteTimeout):
            return Failure("cloud: write timeout", retryable=True)
        return Failure("cloud: read timeout", retryable=True)
    if caused_by(ConnectionRefusedError):
        return Failure("cloud: connection refused", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        if caused_by(http.ConnectError):
            return Failure("cloud: connection failed", retryable=True)
        return Failure("cloud: connection broken", retryable=True)
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return Failure("cloud: malformed response", retryable=True)
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return Failure("cloud: error in stream", retryable=True)
    return Failure(f"cloud: {type(exc).__name__}", retryable=True)
