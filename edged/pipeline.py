"""The request path, in data-flow order.

ingress (validated Request) -> guardian in -> router -> backend -> guardian out
-> responder -> energy. Every request handled here ends with exactly one result or one
error reply. The stages are passed in; this module only puts them in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from edged.agent.loop import Agent, AgentRun
from edged.aio import CancelScope, cancel_scope, deadline, take_cancel
from edged.backends.base import Backend
from edged.config_backends import BackendEntry
from edged.energy.meter import Meter
from edged.errors import BackendFailed, EdgedError, Internal, ToolCallInvalid
from edged.guardian import Guardian
from edged.tools.validate import check_no_call_owed, validate_calls, validate_text
from edged.types import (
    AgentStep,
    CloudUsage,
    EnergyReport,
    Finished,
    FinishReason,
    GuardianReport,
    Request,
    Result,
    RouteDecision,
    Started,
    StreamEvent,
    TextDelta,
    Timing,
    ToolCall,
    ToolCalls,
    Usage,
    Verdict,
)

log = logging.getLogger("edged.pipeline")


class Router(Protocol):
    """What the pipeline needs from the router."""

    async def route(self, request: Request, verdict: Verdict) -> RouteDecision:
        """Where to serve ``request``; raises Unavailable / Timeout / BadRequest."""
        ...

    def fallback(
        self, route: RouteDecision, failed: BackendFailed, verdict: Verdict
    ) -> RouteDecision:
        """Where to serve after ``route``'s backend failed; raises ``failed`` when nowhere."""
        ...

    def served(self, route: RouteDecision, usage: Usage) -> None:
        """Account for a finished request (cloud budget)."""
        ...

    def cloud_usage(self) -> CloudUsage:
        """Today's cloud requests and tokens (telemetry)."""
        ...

    @property
    def table(self) -> Mapping[str, BackendEntry]:
        """Every backend's kind and trust class (telemetry's per-backend report)."""
        ...

    def usage_today(self, name: str) -> CloudUsage:
        """Today's requests and tokens of backend ``name`` (telemetry)."""
        ...

    def close(self) -> None:
        """Release its worker threads (after a reload replaced it)."""
        ...


Observer = Callable[[Request, "Result | None", "EdgedError | None"], None]
"""Told about every finished request (telemetry); must not block."""


class ReplySink(Protocol):
    """Where one request's replies go (the responder)."""

    def chunk(self, text: str) -> None:
        """A streamed piece of text."""
        ...

    def result(self, result: Result) -> None:
        """The final result."""
        ...

    def error(self, err: EdgedError) -> None:
        """The final error."""
        ...


@dataclass(slots=True)
class _Outcome:
    text: str
    finish_reason: FinishReason
    usage: Usage
    started_at_s: float | None
    first_text_at_s: float | None
    tool_calls: tuple[ToolCall, ...] = ()
    steps: tuple[AgentStep, ...] = ()
    #: Calls of device tools (``Request.device_tools``), for the agent loop to run.
    device_calls: tuple[ToolCall, ...] = ()
    route: RouteDecision | None = None


class Pipeline:
    """Puts the stages in order for each request."""

    def __init__(
        self,
        *,
        guardian: Guardian,
        router: Router,
        backends: Mapping[str, Backend],
        meter: Meter,
        observer: Observer | None = None,
        agent: Agent | None = None,
    ) -> None:
        self.guardian = guardian
        self.router = router
        self.backends = backends
        self.meter = meter
        self.observer = observer
        self.agent = agent  # device tools (edged.agent): None when the device has none

    async def handle(self, request: Request, reply: ReplySink) -> None:
        """Serve one request; always ends with exactly one ``result`` or ``error``."""
        guardian = self.guardian  # a reload swaps the attribute; this request keeps its own
        agent = self.agent  # so with the device tools (edged.agent.build)
        self.meter.begin(request.id)
        try:
            async with deadline(request.deadline_at_s):
                verdict = await guardian.check_input(request)  # guardian in
                out = await self._turn(verdict, guardian, reply)  # router .. responder
                if out.device_calls:  # device tools: edged acts, then asks the model again
                    run = await _needed(agent).run(
                        verdict,
                        (out, out.device_calls, out.text),
                        lambda v: self._agent_turn(v, guardian, reply),
                        guardian,
                    )
                    verdict, out = run.verdict, _combined(run)
                assert out.route is not None
                route = out.route
        except EdgedError as err:
            self._fail(request, reply, err)
            return
        except asyncio.CancelledError:  # a client gone (HTTP) or shutdown: close the window
            self.meter.end(request.id, 0)
            raise
        except Exception:
            log.exception("event=request_failed id=%s", request.id)
            self._fail(request, reply, Internal("unexpected failure; see the device log"))
            return
        energy = self.meter.end(request.id, out.usage.completion_tokens)  # energy
        result = self._result(request, route, out, energy, guardian.report(verdict))
        reply.result(result)
        if self.observer is not None:
            self.observer(request, result, None)

    async def _turn(self, verdict: Verdict, guardian: Guardian, reply: ReplySink) -> _Outcome:
        """One model turn: router -> backend -> guardian out -> responder (one fallback)."""
        route = await self.router.route(verdict.request, verdict)  # router
        try:
            out = await self._serve(route, verdict, guardian, reply)
        except BackendFailed as failed:  # before any text: the router may go elsewhere
            route = self.router.fallback(route, failed, verdict)
            out = await self._serve(route, verdict, guardian, reply)
        self.router.served(route, out.usage)
        out.route = route
        return out

    async def _agent_turn(
        self, verdict: Verdict, guardian: Guardian, reply: ReplySink
    ) -> tuple[_Outcome, tuple[ToolCall, ...], str]:
        out = await self._turn(verdict, guardian, reply)
        return out, out.device_calls, out.text

    async def _serve(
        self, route: RouteDecision, verdict: Verdict, guardian: Guardian, reply: ReplySink
    ) -> _Outcome:
        """Backend -> guardian out -> responder, for one route."""
        events = self.backends[route.backend].generate(verdict.request)  # backend
        events = guardian.filter_stream(events, verdict)  # guardian out
        return await self._respond(verdict, guardian, events, reply)  # responder

    def _fail(self, request: Request, reply: ReplySink, err: EdgedError) -> None:
        self.meter.end(request.id, 0)
        reply.error(err)
        if self.observer is not None:
            self.observer(request, None, err)

    @staticmethod
    async def _respond(
        verdict: Verdict,
        guardian: Guardian,
        events: AsyncGenerator[StreamEvent, None],
        reply: ReplySink,
    ) -> _Outcome:
        request = verdict.request
        parts: list[str] = []
        calls: tuple[ToolCall, ...] = ()
        device: tuple[ToolCall, ...] = ()
        started: float | None = None
        first: float | None = None
        tokens = 0  # counted, for a cancel that ends the stream before its Finished
        scope = cancel_scope() or CancelScope()  # barge-in (edged.aio.CancelScope)
        if scope.requested:  # cancelled before the backend began: it never starts
            await events.aclose()
            return _Outcome("", "cancelled", Usage(None, 0), None, None)
        async with scope.armed():
            try:
                async with aclosing(events) as stream:
                    async for ev in stream:
                        if isinstance(ev, TextDelta):
                            if scope.requested:  # after a cancel nothing more is released
                                continue
                            if first is None:
                                first = time.monotonic()
                            parts.append(ev.text)
                            tokens += ev.tokens
                            if request.stream:
                                reply.chunk(ev.text)
                        elif isinstance(ev, ToolCalls):
                            # the one point a call is checked before it may leave the device
                            # (whole, never fragments): valid, then decided by the tool rules
                            # (device tools' calls are decided one by one by the agent loop)
                            valid = validate_calls(request, ev.calls)
                            device = tuple(c for c in valid if c.name in request.device_tools)
                            client = tuple(c for c in valid if c not in device)
                            if client:  # client calls end the turn alone
                                calls, device = guardian.check_calls(request, client, verdict), ()
                            if first is None:
                                first = time.monotonic()
                        elif isinstance(ev, Started):
                            started = time.monotonic()
                        elif isinstance(ev, Finished):
                            text = "".join(parts)
                            reason, usage = _finish(request, ev, text, calls or device)
                            return _Outcome(
                                text, reason, usage, started, first, calls, device_calls=device
                            )
            except asyncio.CancelledError:
                if not take_cancel():  # shutdown or deadline: not the client's cancel
                    raise
                # the backend was closed at once (queued, or a remote stream): what was
                # released is the answer; the prompt's tokens are unknown here
                text = "".join(parts)
                return _Outcome(text, "cancelled", Usage(None, tokens), started, first)
        raise Internal("the backend's stream ended without finishing")

    @staticmethod
    def _result(
        request: Request,
        route: RouteDecision,
        out: _Outcome,
        energy: EnergyReport,
        guardian: GuardianReport | None,
    ) -> Result:
        t0 = request.received_at_s
        now = time.monotonic()
        return Result(
            id=request.id,
            text=out.text,
            finish_reason=out.finish_reason,
            route=route,
            usage=out.usage,
            timing=Timing(
                queue_ms=None if out.started_at_s is None else (out.started_at_s - t0) * 1000,
                ttft_ms=None if out.first_text_at_s is None else (out.first_text_at_s - t0) * 1000,
                total_ms=(now - t0) * 1000,
            ),
            energy=energy,
            guardian=guardian,
            tool_calls=out.tool_calls,
            steps=out.steps,
        )


def _finish(
    request: Request, ev: Finished, text: str, calls: tuple[ToolCall, ...]
) -> tuple[FinishReason, Usage]:
    """The turn's finish reason, once what ``tool_choice`` and ``response_format`` promise
    has been checked (raises ToolCallInvalid when it was not kept)."""
    if calls:
        return "tool_calls", ev.usage
    if ev.finish_reason == "tool_calls":
        raise ToolCallInvalid("the backend ended the turn with tool calls, but sent none")
    if ev.finish_reason != "cancelled":
        check_no_call_owed(request)
        validate_text(request, text)
    return ev.finish_reason, ev.usage


def _combined(run: AgentRun[_Outcome]) -> _Outcome:
    """The agent loop's turns as one outcome: every turn's text (as it was streamed), the
    last turn's finish and calls, usage summed, the first turn's timings. Stopped at the
    step limit with device calls unanswered, the answer ends short: ``length``."""
    outs, last = run.outcomes, run.outcomes[-1]
    usage = Usage(
        _total([o.usage.prompt_tokens for o in outs]),
        sum(o.usage.completion_tokens for o in outs),
        _total([o.usage.cached_tokens for o in outs]),
    )
    firsts = [o.first_text_at_s for o in outs if o.first_text_at_s is not None]
    return _Outcome(
        text="".join(o.text for o in outs),
        finish_reason="length" if run.out_of_steps else last.finish_reason,
        usage=usage,
        started_at_s=outs[0].started_at_s,
        first_text_at_s=firsts[0] if firsts else None,
        tool_calls=last.tool_calls,
        steps=run.steps,
        route=last.route,
    )


def _needed(agent: Agent | None) -> Agent:
    if agent is None:  # ingress offers device tools only where they are configured
        raise Internal("a device tool was called, but this pipeline has no agent loop")
    return agent


def _total(counts: list[int | None]) -> int | None:
    """The sum of per-turn counts; unknown (None) when any turn's is."""
    return None if None in counts else sum(c or 0 for c in counts)
