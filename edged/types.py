"""Frozen value objects that cross stage boundaries.

Units are in the names (``_ms``, ``_s``, ``_j``). Unknown values are ``None`` together with a
``reason``; never a made-up zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]
RouteHint = Literal["auto", "local", "cloud"]
Sensitivity = Literal["normal", "private"]
FinishReason = Literal["stop", "length", "cancelled"]

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
class ChatMessage:
    """One turn of a conversation."""

    role: Role
    content: str


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
class Finished:
    """Generation ended normally; always the last event of a successful stream."""

    finish_reason: FinishReason
    usage: Usage


StreamEvent = Started | TextDelta | Finished


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
    """What the guardian did to a request: rule ids with counts, on input and on output."""

    input: dict[str, int] = field(default_factory=dict)
    output: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Timing:
    """Milliseconds from admission: waiting for a slot, to the first text, and in all."""

    queue_ms: float | None
    ttft_ms: float | None
    total_ms: float


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


@dataclass(frozen=True, slots=True)
class PowerState:
    """What the device knows about its power right now; None where unknown (see ``reason``)."""

    battery_pct: float | None = None
    charging: bool | None = None
    power_w: float | None = None
    thermal_throttled: bool | None = None
    reason: str | None = "no power source configured"


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
