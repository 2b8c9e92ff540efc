"""``[ingress]``: request intake limits (split out of config.py, which re-exports it).

A base module like :mod:`edged.config`: it imports nothing of edged.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class IngressConfig(BaseModel):
    """Request intake limits."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    max_payload_bytes: int = Field(65536, ge=256, description="Largest request payload, bytes.")
    max_correlation_bytes: int = Field(
        1024,
        ge=16,
        description="Longest MQTT v5 Correlation Data a request may carry, bytes (it is echoed "
        "on every reply, so a long one would multiply the traffic).",
    )
    queue_limit: int = Field(
        8, ge=1, description="Requests admitted at once (running plus waiting); past it: busy."
    )
    max_tokens_default: int = Field(256, ge=1, description="max_tokens when a request has none.")
    temperature_default: float = Field(
        0.2,
        ge=0.0,
        le=2.0,
        description="temperature when a request has none. 0.2: the default 135M model answers "
        "simple factual questions right more often than at 0.7 (docs/benchmarks.md; "
        "measured by the retired bench/temperature.py); a larger model may want more.",
    )
    max_tokens_limit: int = Field(2048, ge=1, description="Largest max_tokens a request may ask.")
    max_messages: int = Field(64, ge=1, description="Most messages in one request.")
    dedupe_window: int = Field(
        1024,
        ge=0,
        description="How many recent request ids are remembered, so that a QoS 1 "
        "redelivery of the same id is not served twice.",
    )
    max_tools: int = Field(
        32,
        ge=1,
        le=128,
        description="Most tools one request may offer (each costs prompt tokens and grammar).",
    )
    max_schema_bytes: int = Field(
        8192,
        ge=256,
        description="Largest JSON Schema (one tool's parameters, or response_format's "
        "schema), bytes of compact JSON.",
    )
    max_tool_result_bytes: int = Field(
        32768,
        ge=256,
        description="Most bytes of tool results in one request: the content of every tool "
        "turn, together (UTF-8).",
    )
    chunk_flush_ms: float = Field(
        50.0,
        ge=0,
        le=1000,
        description="Coalesce streamed chunks: the first goes at once, then at most one "
        "chunk per this many milliseconds, text that comes sooner held until then (for every "
        "backend; the local model's text is already gathered by [local] emit_flush_ms). "
        "0: one chunk per piece of text (no waiting).",
    )
