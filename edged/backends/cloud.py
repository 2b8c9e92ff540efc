"""The cloud backend: any OpenAI-compatible server (vLLM, SGLang, LMDeploy, TensorRT-LLM,
Ollama, llama.cpp's server), through the official ``openai`` SDK.

What this module promises the pipeline:

- ``generate`` yields ``Started`` once the server has accepted the request (HTTP 200, stream
  open), then one ``TextDelta`` per streamed content piece, then ``Finished``.
- Every failure is a :class:`CloudFailed` (a :class:`~edged.errors.BackendFailed`, so an
  ``unavailable`` on the wire) with a short message that never holds the API key or prompt
  text, and ``before_first_token`` telling whether any ``TextDelta`` was yielded. When it is
  True the request may be served elsewhere without the client seeing text twice.
- The first token must come within ``cfg.first_token_timeout_s`` (retry included), else the
  request fails before its first token (so it is served locally) and the breaker counts a
  failure: a server that accepts connections and then hangs cannot hold requests for the
  whole read timeout. A request with a deadline gives the cloud at most half of the time it
  has left, so the fallback still has the other half; a wait cut short so is not counted
  against the server (a tight deadline says nothing about its health).
- Retries (``cfg.retries``, 0 or 1) happen only before the first token, after 50-200 ms,
  and never after an HTTP 4xx other than 408/429. The SDK's own retries are off.
- A server that says how long to wait (HTTP 429 or 503 with ``Retry-After`` or
  ``retry-after-ms``) is believed: no retry sooner than that (the request fails over now
  instead), and ``healthy()`` is False until then, so the router sends nothing there
  (``cloud_down``). The wait is capped at :data:`MAX_RETRY_AFTER_S`.
- A :class:`Breaker` stops sending requests to a server that keeps failing.
  ``healthy()`` is the router's question ("may I route here?") and consumes nothing;
  ``generate`` takes the breaker's permission for real (in half-open state: the one trial).

The SDK is imported in ``start()``, so a device without a cloud never pays for the import.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from edged.backends.base import BackendSpec, register
from edged.config import CloudConfig
from edged.errors import BackendFailed
from edged.types import (
    BackendStats,
    BreakerState,
    Finished,
    FinishReason,
    Request,
    Started,
    StreamEvent,
    TextDelta,
    Usage,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

log = logging.getLogger("edged.backend.cloud")

#: Sent when neither the environment nor a systemd credential holds a key; local servers
#: ignore the Authorization header.
PLACEHOLDER_API_KEY = "not-needed"

_Verdict = Literal["success", "failure", "none"]

#: HTTP statuses that are about the request itself (the server answered, so they say nothing
#: about its health): they neither count against the breaker nor close it.
REQUEST_FAULTS = frozenset({400, 413, 422})

#: The longest a ``Retry-After`` keeps requests away from the cloud, seconds (a server that
#: asks for an hour would otherwise silence the cloud on a misconfiguration).
MAX_RETRY_AFTER_S = 300.0


class CloudFailed(BackendFailed):
    """The cloud could not serve a request. ``before_first_token``: no text was yielded.

    The message is short and safe to show or log: it never holds the API key, the prompt,
    or anything the server said in an error body. ``status`` is the HTTP status when the
    server answered with one.
    """

    def __init__(
        self, message: str, *, before_first_token: bool, status: int | None = None
    ) -> None:
        super().__init__(message, before_first_token=before_first_token)
        self.status = status

    def __repr__(self) -> str:
        return (
            f"CloudFailed({self.message!r}, before_first_token={self.before_first_token}, "
            f"status={self.status})"
        )


# --- circuit breaker ------------------------------------------------------------------------------


class Breaker:
    """A circuit breaker over whole requests. Pure logic: no I/O, the clock is injected.

    - ``closed``: requests go through; ``failures`` consecutive failed requests open it.
    - ``open``: nothing goes through for ``cooldown_s``; then it is ``half_open``.
    - ``half_open``: exactly one trial request is admitted. Its success closes the breaker,
      its failure opens it again for a fresh cooldown.

    Two questions, on purpose:

    - :meth:`allow_check` -- "would a request be admitted now?" -- changes nothing. This is
      what the router asks (``CloudBackend.healthy()``); asking it any number of times never
      uses up the half-open trial.
    - :meth:`allow` -- "admit this request" -- takes the permission: in ``half_open`` the
      first call gets the trial and every later call is refused until the trial reports.

    Every admitted request must report exactly once: :meth:`record_success`,
    :meth:`record_failure`, or :meth:`release` (ended without a verdict, e.g. cancelled
    before the server answered; a half-open trial becomes available again).
    """

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    def _tick(self) -> None:
        """Let time pass: an open breaker whose cooldown is over becomes half-open."""
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = "half_open"
            self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open`` (for telemetry)."""
        self._tick()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failed requests in a row since the last success."""
        return self._consecutive

    def allow_check(self) -> bool:
        """Would a request be admitted now? Consumes nothing (the router's question)."""
        self._tick()
        if self._state == "closed":
            return True
        if self._state == "half_open":
            return not self._trial_in_flight
        return False

    def allow(self) -> bool:
        """Admit a request now, or refuse it. In half-open state only the first caller (the
        trial) is admitted until that trial reports."""
        self._tick()
        if self._state == "closed":
            return True
        if self._state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """An admitted request succeeded: the breaker closes and the count starts over."""
        self._tick()
        self._state = "closed"
        self._consecutive = 0
        self._trial_in_flight = False

    def record_failure(self) -> None:
        """An admitted request failed."""
        self._tick()
        self._consecutive += 1
        if self._state == "half_open":
            if self._trial_in_flight:  # the trial failed: open again, fresh cooldown
                self._open()
            # else: a request admitted before the breaker opened reports late; the trial
            # (not yet sent) decides.
        elif self._state == "closed" and self._consecutive >= self.failures:
            self._open()
        # open: a late report from before it opened; the cooldown is not extended

    def release(self) -> None:
        """An admitted request ended without a verdict (cancelled, or the request itself
        was at fault). A half-open trial becomes available again."""
        if self._state == "half_open":
            self._trial_in_flight = False

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._trial_in_flight = False


# --- API key ------------------------------------------------------------------------------------


def read_api_key(cfg: CloudConfig, environ: Mapping[str, str] | None = None) -> str:
    """The API key: ``$<cfg.api_key_env>``, else the systemd credential
    ``$CREDENTIALS_DIRECTORY/<cfg.api_key_credential>``, else a placeholder."""
    env = os.environ if environ is None else environ
    key = env.get(cfg.api_key_env, "").strip()
    if key:
        return key
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        try:
            key = (Path(cred_dir) / cfg.api_key_credential).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            key = ""
        if key:
            return key
    return PLACEHOLDER_API_KEY


# --- failure classification -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Failure:
    message: str
    retryable: bool
    status: int | None = None
    #: Seconds the server asked us to wait (429/503 with Retry-After), else None.
    retry_after_s: float | None = None


def parse_retry_after(headers: Mapping[str, str], now_epoch_s: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (milliseconds; OpenAI's) or ``Retry-After``
    (delta-seconds or an HTTP date), capped at :data:`MAX_RETRY_AFTER_S`; None when absent
    or unreadable. Header names are matched without regard to case."""
    lower = {k.lower(): v for k, v in headers.items()}
    seconds: float | None = None
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            seconds = float(ms) / 1000.0
        except ValueError:
            seconds = None
    raw = lower.get("retry-after")
    if seconds is None and raw is not None:
        raw = raw.strip()
        try:
            seconds = float(raw)
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                seconds = parsedate_to_datetime(raw).timestamp() - now_epoch_s
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class _BadStream(Exception):
    """The stream's content broke the protocol (raised and classified inside this module)."""


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


def _classify(exc: Exception) -> _Failure:
    """A short, safe description of a failure. Only types and status codes are read, never
    messages or bodies (they may echo the prompt or the request headers)."""
    import openai

    if isinstance(exc, _BadStream):
        return _Failure(f"cloud: {exc.args[0]}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if 400 <= status < 500 and status not in (408, 429):
            return _Failure(f"cloud: HTTP {status}", retryable=False, status=status)
        wait_s = None
        if status in (429, 503):
            wait_s = parse_retry_after(exc.response.headers, time.time())
        return _Failure(
            f"cloud: HTTP {status}", retryable=True, status=status, retry_after_s=wait_s
        )
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    if isinstance(exc, openai.APITimeoutError) or any(n.endswith("Timeout") for n in names):
        if "ConnectTimeout" in names:
            return _Failure("cloud: connect timeout", retryable=True)
        if "PoolTimeout" in names:
            return _Failure("cloud: pool timeout", retryable=True)
        if "WriteTimeout" in names:
            return _Failure("cloud: write timeout", retryable=True)
        return _Failure("cloud: read timeout", retryable=True)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return _Failure("cloud: connection refused", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        if "ConnectError" in names:
            return _Failure("cloud: connection failed", retryable=True)
        return _Failure("cloud: connection broken", retryable=True)
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return _Failure("cloud: malformed response", retryable=True)
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return _Failure("cloud: error in stream", retryable=True)
    return _Failure(f"cloud: {type(exc).__name__}", retryable=True)


def _finish_reason(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


# --- the backend ------------------------------------------------------------------------------


@register("cloud")
class CloudBackend:
    """An OpenAI-compatible server, streamed, with retries before the first token and a
    circuit breaker."""

    needs_model_file: ClassVar[bool] = False

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> CloudBackend:
        """From ``[cloud]``."""
        return cls(name=spec.name, cfg=spec.cfg.cloud)

    def __init__(
        self, *, name: str, cfg: CloudConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self._cfg = cfg
        self._client: AsyncOpenAI | None = None
        #: Telemetry reads ``breaker.state``.
        self.breaker = Breaker(cfg.breaker_failures, cfg.breaker_cooldown_s, clock)
        self._clock = clock
        #: No request before this (``clock`` time): the server asked us to wait.
        self._hold_until = 0.0

    def __repr__(self) -> str:
        return f"CloudBackend(name={self.name!r}, base_url={self._cfg.base_url!r})"

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the HTTP client (imports the SDK). No request is sent."""
        from openai import AsyncOpenAI, Timeout

        cfg = self._cfg
        self._client = AsyncOpenAI(
            api_key=read_api_key(cfg),
            base_url=cfg.base_url,
            timeout=Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s),
            max_retries=0,  # we retry ourselves, and only before the first token
        )
        log.info("event=cloud_ready backend=%s base_url=%s", self.name, cfg.base_url)

    async def close(self) -> None:
        """Close the HTTP client and its connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def healthy(self) -> bool:
        """May the router send a request here now? Started, and the breaker would admit
        one. Never uses up the half-open trial: ``generate`` takes it, and a request that
        loses the race for it fails at once with ``before_first_token=True``."""
        return (
            self._client is not None
            and self._clock() >= self._hold_until
            and self.breaker.allow_check()
        )

    @property
    def retry_after_s(self) -> float:
        """Seconds left of a wait the server asked for (0 when none)."""
        return max(0.0, self._hold_until - self._clock())

    def stats(self) -> BackendStats:
        """The breaker's state and the wait the server asked for."""
        return BackendStats(breaker=self.breaker.state, retry_after_s=self.retry_after_s)

    async def restart(self) -> None:
        """Never stuck (every wait has a timeout): nothing to restart."""

    # --- generation -------------------------------------------------------------------------------

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """Stream one answer; closing the iterator closes the HTTP stream."""
        client = self._client
        if client is None:
            raise CloudFailed("cloud: not started", before_first_token=True)
        if self._clock() < self._hold_until:
            raise CloudFailed("cloud: asked to wait (Retry-After)", before_first_token=True)
        if not self.breaker.allow():
            raise CloudFailed("cloud: circuit open", before_first_token=True)
        verdict: _Verdict = "none"
        deltas = 0
        budget_s = self._cfg.first_token_timeout_s
        by_deadline = False
        if request.deadline_at_s is not None:
            half_left_s = (request.deadline_at_s - time.monotonic()) / 2
            if half_left_s < budget_s:
                budget_s, by_deadline = max(half_left_s, 0.0), True
        first_by = time.monotonic() + budget_s
        timed_out = False
        try:
            async with aclosing(self._attempts(client, request)) as events:
                while True:
                    try:
                        if deltas:
                            ev = await events.__anext__()
                        else:
                            ev = await asyncio.wait_for(
                                events.__anext__(), max(first_by - time.monotonic(), 0.0)
                            )
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:
                        timed_out = True
                        verdict = "none" if by_deadline else "failure"
                        log.warning(
                            "event=cloud_failed backend=%s id=%s error=%r before_first_token=True",
                            self.name,
                            request.id,
                            "no first token",
                        )
                        raise CloudFailed(
                            f"cloud: no first token within {budget_s:.1f} s",
                            before_first_token=True,
                        ) from None
                    if isinstance(ev, TextDelta):
                        deltas += 1
                    yield ev
            verdict = "success"
        except CloudFailed as e:
            if not timed_out:
                verdict = "none" if e.status in REQUEST_FAULTS else "failure"
            raise
        finally:
            self._report(verdict, deltas)

    def _report(self, verdict: _Verdict, deltas: int) -> None:
        """Tell the breaker how an admitted request ended. Closed early (deadline, client
        gone) after text came: the server works. Closed early before that, or a fault of
        the request itself: no verdict."""
        if verdict == "success" or (verdict == "none" and deltas):
            self.breaker.record_success()
        elif verdict == "failure":
            self.breaker.record_failure()
        else:
            self.breaker.release()

    async def _attempts(
        self, client: AsyncOpenAI, request: Request
    ) -> AsyncGenerator[StreamEvent, None]:
        """Up to 1 + retries attempts, retrying only before the first text."""
        cfg = self._cfg
        messages = _messages(request)
        started = False
        deltas = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                async with aclosing(self._one_attempt(client, request, messages)) as events:
                    async for ev in events:
                        if isinstance(ev, Started):
                            if started:
                                continue
                            started = True
                        elif isinstance(ev, TextDelta):
                            deltas += 1
                        yield ev
                return
            except Exception as exc:
                failure = _classify(exc)
            # Decided outside the except block, so that nothing raised here chains the SDK's
            # exception (it holds the HTTP request, Authorization header included).
            before = deltas == 0
            pause_s = random.uniform(0.05, 0.2)
            if failure.retry_after_s is not None:
                self._hold_until = max(self._hold_until, self._clock() + failure.retry_after_s)
                log.info(
                    "event=cloud_throttled backend=%s status=%s wait_s=%.3f",
                    self.name,
                    failure.status,
                    failure.retry_after_s,
                )
            may_retry = failure.retry_after_s is None or failure.retry_after_s <= pause_s
            if before and failure.retryable and may_retry and attempt <= cfg.retries:
                log.info(
                    "event=cloud_retry backend=%s id=%s error=%r attempt=%d",
                    self.name,
                    request.id,
                    failure.message,
                    attempt,
                )
                await asyncio.sleep(pause_s)
                continue
            log.warning(
                "event=cloud_failed backend=%s id=%s error=%r before_first_token=%s attempts=%d",
                self.name,
                request.id,
                failure.message,
                before,
                attempt,
            )
            raise CloudFailed(failure.message, before_first_token=before, status=failure.status)

    async def _one_attempt(
        self,
        client: AsyncOpenAI,
        request: Request,
        messages: list[ChatCompletionMessageParam],
    ) -> AsyncGenerator[StreamEvent, None]:
        stream = await client.chat.completions.create(
            model=self._cfg.model,
            messages=messages,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:  # closes the HTTP response however we leave
            yield Started()
            deltas = 0
            finish: str | None = None
            usage: Usage | None = None
            async for chunk in stream:
                try:  # the SDK does not validate chunks: a field may be missing or mistyped
                    if chunk.usage is not None:
                        usage = Usage(
                            prompt_tokens=int(chunk.usage.prompt_tokens),
                            completion_tokens=int(chunk.usage.completion_tokens),
                        )
                    pieces: list[tuple[str | None, str | None]] = [
                        (c.delta.content, c.finish_reason)
                        for c in chunk.choices or ()
                        if c.index == 0
                    ]
                except (AttributeError, TypeError, ValueError):
                    raise _BadStream("malformed chunk") from None
                for text, reason in pieces:
                    if text:
                        if not isinstance(text, str):
                            raise _BadStream("malformed chunk")
                        deltas += 1
                        yield TextDelta(text, 1)
                    if reason is not None:
                        finish = reason
            if finish is None:
                raise _BadStream("stream ended without a finish reason")
            if usage is None:
                # The server sent no usage (llama.cpp's server does not): one token per piece;
                # the prompt's size is unknown here: null (None), never 0.
                usage = Usage(prompt_tokens=None, completion_tokens=deltas)
            yield Finished(_finish_reason(finish), usage)


def _messages(request: Request) -> list[ChatCompletionMessageParam]:
    out: list[ChatCompletionMessageParam] = []
    for m in request.messages:
        if m.role == "system":
            out.append({"role": "system", "content": m.content})
        elif m.role == "assistant":
            out.append({"role": "assistant", "content": m.content})
        else:
            out.append({"role": "user", "content": m.content})
    return out
