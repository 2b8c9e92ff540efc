"""The cloud backend: any OpenAI-compatible server (vLLM, SGLang, LMDeploy, TensorRT-LLM,
Ollama, llama.cpp's server), through the official ``openai`` SDK.

What this module promises the pipeline:

- ``generate`` yields ``Started`` once the server has accepted the request (HTTP 200, stream
  open), then one ``TextDelta`` per streamed content piece, then ``Finished``.
- Tools, ``tool_choice`` and ``response_format`` are passed through in the OpenAI shapes
  (:mod:`~edged.backends.cloud_messages`). Streamed tool-call fragments go only into a
  :class:`~edged.tools.assemble.CallAssembler`: nothing of a call is yielded until the stream
  has ended with a ``finish_reason``; then ``ToolCalls`` (whole, once) and
  ``Finished("tool_calls")``. A stream cut before that releases nothing (a ``CloudFailed``
  as for text). Validation against the tools' schemas is the pipeline's
  (edged.tools.validate). A server that ignored ``stream: true`` and sent one JSON
  ``chat.completion`` is read the same way.
- A tool-call protocol error (an id or name changed, a fragment without index among
  indexed calls, a limit broken, ``finish_reason`` disagreeing with the calls) is
  :class:`~edged.errors.ToolCallInvalid`, the backend named: the remote's answer, not an
  outage, so it is neither retried nor counted against the breaker (nor for it, unless
  text had come), like an HTTP 400.
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
  (``cloud_down``). The wait is capped at
  :data:`~edged.backends.retry_after.MAX_RETRY_AFTER_S`.
- A :class:`~edged.backends.breaker.Breaker` stops sending requests to a server that keeps failing.
  ``healthy()`` is the router's question ("may I route here?") and consumes nothing;
  ``generate`` takes the breaker's permission for real (in half-open state: the one trial).

The SDK is imported in ``start()``, so a device without a cloud never pays for the import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from edged.backends import cloud_messages
from edged.backends.base import BackendSpec, register
from edged.backends.breaker import Breaker
from edged.backends.failures import BadStream, classify
from edged.config import CloudConfig
from edged.errors import BackendFailed, ToolCallInvalid
from edged.tools.assemble import CallAssembler
from edged.types import (
    BackendStats,
    Finished,
    Request,
    Started,
    StreamEvent,
    TextDelta,
    ToolCalls,
    Usage,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger("edged.backend.cloud")

#: Sent when neither the environment nor a systemd credential holds a key; local servers
#: ignore the Authorization header.
PLACEHOLDER_API_KEY = "not-needed"

_Verdict = Literal["success", "failure", "none"]

#: HTTP statuses that are about the request itself (the server answered, so they say nothing
#: about its health): they neither count against the breaker nor close it.
REQUEST_FAULTS = frozenset({400, 413, 422})


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


# --- API key ------------------------------------------------------------------------------------


def read_api_key(cfg: CloudConfig, environ: Mapping[str, str] | None = None) -> str:
    """The API key: ``$<cfg.api_key_env>``, else the systemd credential
    ``cfg.api_key_credential`` (edged.secrets), else a placeholder."""
    from edged.secrets import read_secret

    key = read_secret(cfg.api_key_env, cfg.api_key_credential, environ)
    return (key or PLACEHOLDER_API_KEY).strip()


class _Progress:
    """Internal (never yielded by ``generate``): the first tool-call fragment came, so the
    server is answering; the first-token wait is over, though no text came."""


_PROGRESS = _Progress()


# --- the backend ------------------------------------------------------------------------------


@register("cloud")
class CloudBackend:
    """An OpenAI-compatible server, streamed, with retries before the first token and a
    circuit breaker."""

    needs_model_file: ClassVar[bool] = False
    #: Tools, tool_choice and response_format are honoured (docs/tools.md).
    supports_tools: ClassVar[bool] = True

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
        #: Moving average of streamed pieces/s after the first (telemetry), None until seen.
        self._tokens_per_s: float | None = None

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

    @property
    def resident(self) -> bool:
        """Remote: nothing of it is in this device's memory to unload (telemetry says null)."""
        return True

    def stats(self) -> BackendStats:
        """The breaker's state and the wait the server asked for."""
        return BackendStats(
            breaker=self.breaker.state,
            retry_after_s=self.retry_after_s,
            tokens_per_s=self._tokens_per_s,
        )

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
        answering = False  # text or a tool-call fragment came: the first-token wait is over
        budget_s = self._cfg.first_token_timeout_s
        by_deadline = False
        if request.deadline_at_s is not None:
            half_left_s = (request.deadline_at_s - time.monotonic()) / 2
            if half_left_s < budget_s:
                budget_s, by_deadline = max(half_left_s, 0.0), True
        first_by = time.monotonic() + budget_s
        first_text_at: float | None = None
        timed_out = False
        try:
            async with aclosing(self._attempts(client, request)) as events:
                while True:
                    try:
                        if answering:
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
                    if isinstance(ev, _Progress):
                        answering = True
                        continue
                    if isinstance(ev, TextDelta):
                        deltas += 1
                        answering = True
                        if first_text_at is None:
                            first_text_at = time.monotonic()
                    yield ev
            verdict = "success"
            self._measure(deltas, first_text_at)
        except CloudFailed as e:
            if not timed_out:
                verdict = "none" if e.status in REQUEST_FAULTS else "failure"
            raise
        finally:
            self._report(verdict, deltas)

    def _measure(self, deltas: int, first_text_at: float | None) -> None:
        """Fold one answer's decode rate (pieces after the first, per second) into the
        moving average."""
        if first_text_at is None or deltas < 2:
            return
        elapsed = time.monotonic() - first_text_at
        if elapsed <= 0:
            return
        rate = (deltas - 1) / elapsed
        old = self._tokens_per_s
        self._tokens_per_s = rate if old is None else 0.8 * old + 0.2 * rate

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
    ) -> AsyncGenerator[StreamEvent | _Progress, None]:
        """Up to 1 + retries attempts, retrying only before the first text."""
        cfg = self._cfg
        messages = cloud_messages.messages(request)
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
            except ToolCallInvalid as e:  # the remote's answer: never retried
                log.warning(
                    "event=cloud_tool_call_invalid backend=%s id=%s error=%r",
                    self.name,
                    request.id,
                    e.message,
                )
                raise ToolCallInvalid(f"{self.name}: {e.message}") from None
            except Exception as exc:
                failure = classify(exc)
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
        self, client: AsyncOpenAI, request: Request, messages: list[dict[str, Any]]
    ) -> AsyncGenerator[StreamEvent | _Progress, None]:
        stream = await client.chat.completions.create(
            model=self._cfg.model,
            messages=cast(Any, messages),
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stream=True,
            stream_options={"include_usage": True},
            **cloud_messages.tool_params(request),
        )
        async with stream:  # closes the HTTP response however we leave
            yield Started()
            calls = CallAssembler()
            pieces = 0  # text pieces and call fragments: the token count when no usage came
            finish: str | None = None
            usage: Usage | None = None
            content_type = stream.response.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() == "application/json":
                # the server ignored stream: true and sent one chat.completion
                try:
                    answer = cloud_messages.completion(json.loads(await stream.response.aread()))
                except ValueError:
                    raise BadStream("malformed response") from None
                if answer.text:
                    yield TextDelta(answer.text, 1)
                calls.feed_all(answer.tool_calls)
                finish, usage, pieces = answer.finish_reason, answer.usage, 1
            else:
                async for chunk in stream:
                    try:  # the SDK does not validate chunks: a field may be missing or mistyped
                        if chunk.usage is not None:
                            usage = Usage(
                                prompt_tokens=int(chunk.usage.prompt_tokens),
                                completion_tokens=int(chunk.usage.completion_tokens),
                            )
                        parts: list[tuple[str | None, Any, str | None]] = [
                            (c.delta.content, c.delta.tool_calls, c.finish_reason)
                            for c in chunk.choices or ()
                            if c.index == 0
                        ]
                    except (AttributeError, TypeError, ValueError):
                        raise BadStream("malformed chunk") from None
                    for text, fragments, reason in parts:
                        if text:
                            if not isinstance(text, str):
                                raise BadStream("malformed chunk")
                            pieces += 1
                            yield TextDelta(text, 1)
                        if fragments is not None:
                            if not calls.started:
                                yield _PROGRESS
                            calls.feed_all(fragments)  # held: nothing of a call leaves yet
                            pieces += 1
                        if reason is not None:
                            finish = reason
            if finish is None:
                raise BadStream("stream ended without a finish reason")
            whole = calls.finish()
            reason_out = cloud_messages.turn_end(finish, whole)
            if usage is None:
                # The server sent no usage (llama.cpp's server does not): one token per piece;
                # the prompt's size is unknown here: null (None), never 0.
                usage = Usage(prompt_tokens=None, completion_tokens=pieces)
            if whole:
                yield ToolCalls(whole)
            yield Finished(reason_out, usage)
