"""One exception tree; every error that can reach a client carries a stable wire code.

The codes are part of the wire contract (docs/protocol.md) and never change meaning.
"""

from __future__ import annotations

from typing import ClassVar

#: Every code a client can see in an ``error`` reply.
WIRE_CODES: tuple[str, ...] = (
    "bad_request",
    "too_large",
    "busy",
    "blocked",
    "timeout",
    "unavailable",
    "internal",
    "shutting_down",
    "tool_call_invalid",
)


class EdgedError(Exception):
    """Base of every error edged raises on purpose; ``code`` is its wire code."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(EdgedError):
    """The request is malformed: bad JSON, wrong types, unknown fields, missing prompt."""

    code = "bad_request"


class TooLarge(EdgedError):
    """The payload is over the configured size limit (checked before parsing)."""

    code = "too_large"


class Busy(EdgedError):
    """The admission queue is full; the client may retry later."""

    code = "busy"


class Blocked(EdgedError):
    """A guardian rule refused the request or stopped the answer."""

    code = "blocked"


class Timeout(EdgedError):
    """The request's deadline passed before an answer was complete."""

    code = "timeout"


class Unavailable(EdgedError):
    """No backend that may serve this request is available."""

    code = "unavailable"


class BackendFailed(Unavailable):
    """A backend failed. ``before_first_token``: no text was produced yet, so the request
    may still be served elsewhere without the client seeing anything twice."""

    def __init__(self, message: str, *, before_first_token: bool = False) -> None:
        super().__init__(message)
        self.before_first_token = before_first_token


class Internal(EdgedError):
    """An unexpected failure inside edged."""

    code = "internal"


class ShuttingDown(EdgedError):
    """The daemon is stopping and will not finish this request."""

    code = "shutting_down"


class ToolCallInvalid(EdgedError):
    """A backend's tool call (or structured answer) could not be made valid: an unknown tool,
    arguments that are not one JSON object or break the tool's schema, a call that breaks
    ``tool_choice``, or text that breaks ``response_format``. Nothing of it was released."""

    code = "tool_call_invalid"


class ConfigError(Exception):
    """A configuration file or override is invalid; the message names the key path."""


class ModelError(Exception):
    """A model file is missing, has the wrong checksum, or cannot be fetched."""
