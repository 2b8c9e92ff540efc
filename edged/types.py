"""Frozen value objects that cross stage boundaries.

Units are in the names (``_ms``, ``_s``, ``_j``). Unknown values are ``None`` together with a
``reason``; never a made-up zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]
#: ``auto``, ``local``, ``cloud``, or a ``[backends.NAME]`` name (the router checks it).
RouteHint = str
Sensitivity = Literal["normal", "private"]
FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]
#: ``tool_choice`` on the wire: ``auto``, ``none``, ``required``, or one named function.
ToolChoiceMode = Literal["auto", "none", "required", "function"]
#: ``response_format.type`` on the wire.
ResponseFormatType = Literal["text", "json_object", "json_schema"]

#: The two backend names a route can name.
LOCAL = "local"
CLOUD = "cloud"


BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BackendStats:
    """What a backend says about itself (cached values, no I/O): the supervisor, the router
    and telemetry read it. None where a backend does not measure a figure (yet)."""

    #: Generations queued or running.
    queue_depth: int | None = None
    #: Moving average of decode tokens/s.
    tokens_per_s: float | None = None
    #: Moving average of seconds from a job's start to its first token.
    ttft_s: float | None = None
    #: Why a decode looks stuck past its deadline (the supervisor restarts it), else None.
    stuck: str | None = None
    #: The circuit breaker's state, for a backend with one (the cloud).
    breaker: BreakerState | None = None
    #: Seconds left of a wait the server asked for (0 when none).
    retry_after_s: float = 0.0
    #: The conversation KV cache's figures (telemetry ``session_cache``); None: none kept.
    sessions: dict[str, float | int | None] | None = None


@dataclass(frozen=True, slots=True)
class CloudUsage:
    """Today's cloud use, counted against the router's daily budget."""

    requests_today: int
    tokens_today: int


class Embedder(Protocol):
    """Text to unit vectors (blocking; called off the event loop). The guardian's semantic
    rules and the router's semantic routes share one."""

    def embed(self, texts: Sequence[str]) -> Any:
        """An (n, dim) array of L2-normalized float32 rows."""
        ...


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of a tool the model made: ``arguments`` is the JSON text of an object (the
    OpenAI shape), released only whole and after it validated against the tool's schema."""

    id: str
    name: str
    arguments: str
    #: A guardian ``confirm`` rule released it: the app asks the user before it acts.
    confirm: bool = False


@dataclass(frozen=True, slots=True)
class ToolDecision:
    """The guardian's decision on one tool call, for the audit event (``events/tool``).
    ``arguments`` is the call's JSON text; it is published only when ``log.log_prompts``."""

    request_id: str
    call_id: str
    tool: str
    decision: Literal["allow", "block", "confirm"]
    rules: tuple[str, ...]
    latency_us: float
    arguments: str
    #: A call of a device tool (``Request.device_tools``: edged runs it), else a client's.
    device: bool = False


#: Told about every tool decision (telemetry); must not block.
ToolAudit = Callable[[ToolDecision], None]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool a request offers (``tools[i].function`` on the wire). ``parameters`` is a
    JSON Schema object already checked against the supported subset (docs/tools.md)."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether and which tool the model must call; ``name`` only with mode ``function``."""

    mode: ToolChoiceMode
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """What the text of the answer must be. ``schema`` (checked against the supported
    subset) and ``name`` only with type ``json_schema``."""

    type: ResponseFormatType
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool = True


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of a conversation.

    An assistant turn may carry ``tool_calls`` (its ``content`` is then often ``""``: null on
    the wire); a ``tool`` turn carries the result of one call in ``content`` and the call's
    id in ``tool_call_id``.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where and how replies to one request are published."""

    topic: str
    correlation_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request, ready for the pipeline.

    ``received_at_s`` is ``time.monotonic()`` when the MQTT message arrived;
    ``deadline_at_s`` is the monotonic instant after which no answer may be sent (or None).
    """

    id: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float
    stream: bool
    route: RouteHint
    sensitivity: Sensitivity
    reply: ReplyAddress
    received_at_s: float
    deadline_at_s: float | None = None
    policy: str | None = None
    #: Tools the model may call (empty: none offered).
    tools: tuple[ToolSpec, ...] = ()
    #: How the tools may be used; None exactly when ``tools`` is empty.
    tool_choice: ToolChoice | None = None
    #: What the answer's text must be; None is plain text.
    response_format: ResponseFormat | None = None
    #: The client's conversation key (like ``id``): the local backend keeps its KV state.
    conversation: str | None = None
    #: Names of the device tools (``[tools.NAME]``) among ``tools``: edged executes them.
    device_tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Which backend serves a request, and the stable reason codes for the choice."""

    backend: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts for one generation."""

    prompt_tokens: int | None  # None: the backend did not say (some servers send no usage)
    completion_tokens: int
    #: Prompt tokens served from the KV cache (not evaluated again); None: not known.
    cached_tokens: int | None = None


# --- stream events: what a backend yields, in order -------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """The backend has taken the request (a decode slot is held; prompt evaluation begins)."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text (complete UTF-8 characters only)."""

    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """The turn's tool calls, whole (never fragments), at most once per stream and just
    before ``Finished`` (whose ``finish_reason`` is then ``tool_calls``). The backend has
    parsed them; the pipeline validates them against the request's tools before any
    leaves the device."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    """Generation ended normally; always the last event of a successful stream."""

    finish_reason: FinishReason
    usage: Usage


StreamEvent = Started | TextDelta | ToolCalls | Finished


# --- reports attached to a result ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnergyReport:
    """Energy one request cost. Every number is None when unknown, with ``reason`` saying why."""

    joules: float | None
    joules_active: float | None
    tokens_per_joule: float | None
    mwh_per_1k_tokens: float | None
    source: str
    estimated: bool
    sample_hz: float | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class GuardianReport:
    """What the guardian did to a request: rule ids with counts, on input, on output, and on
    the tool calls (rules that blocked a call or released it for confirmation)."""

    input: dict[str, int] = field(default_factory=dict)
    output: dict[str, int] = field(default_factory=dict)
    tools: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Timing:
    """Milliseconds from admission: waiting for a slot, to the first text, and in all."""

    queue_ms: float | None
    ttft_ms: float | None
    total_ms: float


@dataclass(frozen=True, slots=True)
class AgentStep:
    """One device-tool call of the agent loop: its decision (``allow``; ``confirm``: run
    only once the app approved; ``block``; ``refused``: its topic could not be filled), the
    guardian rule ids, and how long it took (None when it was never executed)."""

    tool: str
    decision: Literal["allow", "block", "confirm", "refused"]
    rules: tuple[str, ...]
    latency_ms: float | None
    #: ``ok`` (a reply came, or there is no reply topic), ``timeout``, or ``not_run``.
    outcome: Literal["ok", "timeout", "not_run"] = "ok"


@dataclass(frozen=True, slots=True)
class Result:
    """The final successful outcome of one request."""

    id: str
    text: str
    finish_reason: FinishReason
    route: RouteDecision
    usage: Usage
    timing: Timing
    energy: EnergyReport
    guardian: GuardianReport | None
    #: The turn's validated tool calls (``finish_reason`` is then ``tool_calls``).
    tool_calls: tuple[ToolCall, ...] = ()
    #: The device-tool calls the agent loop made, in order (empty: none).
    steps: tuple[AgentStep, ...] = ()


@dataclass(frozen=True, slots=True)
class PowerState:
    """What the device knows about its power right now; None where unknown (see ``reason``)."""

    battery_pct: float | None = None
    charging: bool | None = None
    power_w: float | None = None
    thermal_throttled: bool | None = None
    reason: str | None = "no power source configured"
    power_mode: str | None = None  # the board's power mode (Jetson nvpmodel name); None: none


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guardian's decision on a request's input.

    ``request`` is the request to serve (redactions applied); ``force_local`` pins it to the
    device; ``actions`` counts rule ids that fired.
    """

    request: Request
    force_local: bool = False
    actions: dict[str, int] = field(default_factory=dict)
    #: Rule ids that acted on the streamed output, with counts (filled while streaming).
    output: dict[str, int] = field(default_factory=dict)
    #: Rule ids that blocked or marked tool calls, with counts (filled by check_calls).
    tools: dict[str, int] = field(default_factory=dict)
