"""The on-device agent loop (issue 15 B, docs/agents.md): model -> call -> check -> act ->
result -> model, for the device tools a request opted into (``device_tools``).

The pipeline runs one model turn at a time (``turn``: router, backend, guardian out,
responder) and hands the turn's device-tool calls here. For each call: the guardian's tool
rules decide it (a blocked call is never published; a ``confirm`` call is not run, since
no one approved it), its topic is filled from the arguments (a value that is not one topic
level is refused, never published), a released call is published and its reply awaited
(``ToolExecutor``; no reply in ``timeout_s`` is a result saying so). The model gets every
outcome as a ``tool`` turn after the assistant turn that made the calls; the guardian's
input rules read the extended request (tool results are untrusted input: a ``force_local``
verdict pins every later turn to the device), and the model is asked again, at most
``max_steps`` turns, all inside the request's one deadline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Literal, Protocol, TypeVar

from edged.config_agent import ToolConfig
from edged.errors import Blocked
from edged.tools.validate import parse_json
from edged.types import AgentStep, ChatMessage, Request, ToolCall, ToolChoice, Verdict

from .fill import TopicRefused, fill_topic

log = logging.getLogger("edged.agent")

#: Longest tool result given to the model, UTF-8 bytes (a longer reply is cut).
MAX_RESULT_BYTES = 16384

T = TypeVar("T")


class ToolExecutor(Protocol):
    """Runs one device-tool call: publishes ``payload_json`` on ``topic`` (QoS 1) and, with
    a ``reply_topic``, returns the first message there (as text) or None after
    ``timeout_s`` seconds; without one, returns "" once the publish is queued."""

    async def call(
        self, topic: str, payload_json: str, reply_topic: str | None, timeout_s: float
    ) -> str | None:
        """The tool's result text, or None when no reply came in time."""
        ...


class Approver(Protocol):
    """Asks the app before a call a guardian ``confirm`` rule released is run."""

    async def approve(self, request: Request, call: ToolCall, rules: tuple[str, ...]) -> bool:
        """True once approved; False when denied or not answered in time."""
        ...


class GuardianLike(Protocol):
    """What the loop needs from the guardian (edged.guardian.Guardian has both)."""

    async def check_input(self, request: Request) -> Verdict:
        """Judge the extended request (raises Blocked to refuse it)."""
        ...

    def check_calls(
        self, request: Request, calls: Sequence[ToolCall], verdict: Verdict
    ) -> tuple[ToolCall, ...]:
        """The released calls; raises Blocked when every one is blocked."""
        ...


#: One model turn: the pipeline's outcome (opaque here) and its device-tool calls.
Turn = Callable[[Verdict], Awaitable[tuple[T, tuple[ToolCall, ...], str]]]


@dataclass(frozen=True, slots=True)
class AgentRun(Generic[T]):
    """The loop's end: every turn's outcome in order (the last one is the answer), the
    verdict of the last turn, the steps, and whether it stopped at ``max_steps`` with
    device calls still unanswered."""

    outcomes: tuple[T, ...]
    verdict: Verdict
    steps: tuple[AgentStep, ...]
    out_of_steps: bool


def _result(kind: str, message: str) -> str:
    return json.dumps({"error": kind, "message": message}, ensure_ascii=False)


def _cut(text: str) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= MAX_RESULT_BYTES:
        return text
    return raw[:MAX_RESULT_BYTES].decode("utf-8", errors="ignore")


def _merge_counts(into: dict[str, int], old: Mapping[str, int], *, add: bool) -> None:
    for rid, n in old.items():
        into[rid] = into.get(rid, 0) + n if add else max(into.get(rid, 0), n)


class Agent:
    """The device tools of this device, the executor that runs them, and the step limit."""

    def __init__(
        self,
        tools: Mapping[str, ToolConfig],
        executor: ToolExecutor,
        max_steps: int,
        approver: Approver | None = None,
        observe: Callable[[AgentStep], None] | None = None,
    ) -> None:
        self.tools = tools
        self.executor = executor
        self.max_steps = max_steps
        self.approver = approver  # None: a confirm call is never run (fail closed)
        self.observe = observe  # told every step (telemetry's tool counts); must not block

    async def run(
        self,
        verdict: Verdict,
        first: tuple[T, tuple[ToolCall, ...], str],
        turn: Turn[T],
        guardian: GuardianLike,
    ) -> AgentRun[T]:
        """Act on ``first``'s device calls and ask again until a turn makes none (or the
        step limit); ``turn`` serves one more model turn for a verdict."""
        outcome, calls, text = first
        outcomes = [outcome]
        steps: list[AgentStep] = []
        while calls:
            if len(outcomes) >= self.max_steps:
                log.info("event=agent_out_of_steps id=%s steps=%d", verdict.request.id, len(steps))
                return AgentRun(tuple(outcomes), verdict, tuple(steps), True)
            turns = [ChatMessage("assistant", text, calls)]
            for call in calls:
                content, step = await self._one(verdict, call, guardian)
                steps.append(step)
                if self.observe is not None:
                    self.observe(step)
                turns.append(ChatMessage("tool", content, tool_call_id=call.id))
            verdict = await self._reread(verdict, tuple(turns), guardian)
            choice = verdict.request.tool_choice
            log.debug(
                "event=agent_turn id=%s turn=%d tool_choice=%s",
                verdict.request.id,
                len(outcomes) + 1,
                "unset" if choice is None else choice.mode,
            )
            outcome, calls, text = await turn(verdict)
            outcomes.append(outcome)
        return AgentRun(tuple(outcomes), verdict, tuple(steps), False)

    async def _reread(
        self, verdict: Verdict, turns: tuple[ChatMessage, ...], guardian: GuardianLike
    ) -> Verdict:
        """The request extended by ``turns``, read again by the guardian's input rules; a
        request pinned to the device stays pinned, and rule counts carry over."""
        request = verdict.request
        choice = request.tool_choice
        if choice is not None and choice.mode in ("required", "function"):
            choice = ToolChoice("auto")  # the forced call was made: the model may answer now
        extended = replace(request, messages=request.messages + turns, tool_choice=choice)
        new = await guardian.check_input(extended)
        if verdict.force_local and not new.force_local:
            new = replace(new, force_local=True)
        _merge_counts(new.actions, verdict.actions, add=False)  # the same turns, read again
        _merge_counts(new.output, verdict.output, add=True)
        _merge_counts(new.tools, verdict.tools, add=True)
        return new

    async def _one(
        self, verdict: Verdict, call: ToolCall, guardian: GuardianLike
    ) -> tuple[str, AgentStep]:
        """Decide and run one call: the tool turn's content, and the step."""
        request = verdict.request
        before = dict(verdict.tools)
        tool = self.tools.get(call.name)
        if tool is None:  # a reload named a tool this loop was not built with
            why = f"{call.name!r} is not a device tool of this running daemon (restart it)"
            return _result("refused", why), AgentStep(call.name, "refused", (), None, "not_run")
        try:
            released = guardian.check_calls(request, (call,), verdict)
        except Blocked as e:
            rules = _fired(before, verdict.tools)
            return _result("blocked", e.message), AgentStep(
                call.name, "block", rules, None, "not_run"
            )
        rules = _fired(before, verdict.tools)
        arguments = parse_json(call.arguments)  # validated against the tool's schema
        try:
            topic = fill_topic(tool.topic, arguments)
            reply = None if tool.reply_topic is None else fill_topic(tool.reply_topic, arguments)
        except TopicRefused as e:
            log.info("event=tool_topic_refused id=%s tool=%s why=%r", request.id, call.name, str(e))
            return _result("refused", f"not run: {e}"), AgentStep(
                call.name, "refused", rules, None, "not_run"
            )
        decision: Literal["allow", "confirm"] = "allow"
        if released and released[0].confirm:  # ask first; no approval in time is a denial
            decision = "confirm"
            if self.approver is None or not await self.approver.approve(request, call, rules):
                why = "the user did not approve this call; it was not run"
                return _result("not_confirmed", why), AgentStep(
                    call.name, "confirm", rules, None, "not_run"
                )
        t0 = time.monotonic()
        got = await self.executor.call(topic, call.arguments, reply, tool.timeout_s)
        latency_ms = (time.monotonic() - t0) * 1000
        if got is None:
            why = f"no reply on {reply} within {tool.timeout_s:g} s"
            return _result("timeout", why), AgentStep(
                call.name, decision, rules, latency_ms, "timeout"
            )
        content = got if reply is not None else json.dumps({"status": "sent", "topic": topic})
        return _cut(content), AgentStep(call.name, decision, rules, latency_ms, "ok")


def _fired(before: Mapping[str, int], after: Mapping[str, int]) -> tuple[str, ...]:
    """The rule ids whose counts grew: the rules that decided one call."""
    return tuple(sorted(r for r, n in after.items() if n > before.get(r, 0)))
