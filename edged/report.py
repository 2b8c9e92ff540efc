"""What a finished request reports, as JSON fields: the reply's ``result`` (ingress.wire) and
the per-request telemetry event (telemetry.reporter) carry the same ones, written here once.
A base module: imports only types."""

from __future__ import annotations

from typing import Any

from edged.types import AgentStep, Result


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def result_fields(result: Result) -> dict[str, Any]:
    """``finish_reason``, ``route``, ``usage``, ``timing_ms``, ``energy`` and ``guardian``
    of ``result`` (docs/schemas/result.schema.json), in that order."""
    e = result.energy
    g = result.guardian
    return {
        "finish_reason": result.finish_reason,
        "route": {"backend": result.route.backend, "reasons": list(result.route.reasons)},
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "cached_tokens": result.usage.cached_tokens,
        },
        "timing_ms": {
            "queue": _ms(result.timing.queue_ms),
            "ttft": _ms(result.timing.ttft_ms),
            "total": _ms(result.timing.total_ms),
        },
        "energy": {
            "joules": e.joules,
            "joules_active": e.joules_active,
            "tokens_per_joule": e.tokens_per_joule,
            "mwh_per_1k_tokens": e.mwh_per_1k_tokens,
            "source": e.source,
            "estimated": e.estimated,
            "sample_hz": e.sample_hz,
            "reason": e.reason,
        },
        "guardian": None if g is None else {"input": g.input, "output": g.output, "tools": g.tools},
    }


def steps_field(steps: tuple[AgentStep, ...]) -> dict[str, Any]:
    """``{"steps": [...]}`` for the device-tool calls of the agent loop; ``{}`` when there
    were none (docs/schemas/result.schema.json)."""
    if not steps:
        return {}
    return {
        "steps": [
            {
                "tool": s.tool,
                "decision": s.decision,
                "rules": list(s.rules),
                "latency_ms": _ms(s.latency_ms),
                "outcome": s.outcome,
            }
            for s in steps
        ]
    }
