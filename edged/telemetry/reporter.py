"""Telemetry: the periodic device report, one event per request and per tool decision, the
energy counter.

Payloads are numbers, never formatted strings, with ``schema_version``; unknown values are
null with a reason. Everything goes through the outbox, which spools to disk while the
broker is away and replays in order with ``historical: true``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from edged.energy.meter import integrate
from edged.energy.sampler import Sampler
from edged.errors import EdgedError
from edged.report import result_fields
from edged.store import StateDoc
from edged.types import AgentStep, Request, Result, ToolDecision

from .tool_counts import ToolCounts

log = logging.getLogger("edged.telemetry")

SCHEMA_VERSION = 1


class Sender(Protocol):
    """The outbox: publishes now, or spools while the broker is away."""

    async def send(self, topic: str, record: dict[str, Any]) -> None:
        """Queue one record for ``topic``."""
        ...


class EnergyCounter:
    """Cumulative board energy in J since first start: persisted, never goes backwards."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total_j = 0.0
        self.reason: str | None = None
        self._doc = StateDoc(path)
        data = self._doc.read()  # never raises; reads the format before checksums too
        why = self._doc.damage
        if data is not None:
            value = data.get("total_j")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if math.isfinite(value) and value >= 0:
                    self.total_j = float(value)
                else:
                    why = f"total_j is {value!r}"
            else:
                why = "no number total_j"
        if why is not None:
            self.reason = f"counter file unreadable, restarted from 0: {why}"
            log.warning("event=energy_counter_reset path=%s error=%r", path, why)

    def add(self, joules: float) -> None:
        """Add energy (negative amounts are ignored: the counter never goes backwards)."""
        if joules > 0 and math.isfinite(joules):
            self.total_j += joules

    def save(self) -> None:
        """Write atomically (checksummed, unique temp file, fsync, rename); errors are logged,
        not raised."""
        try:
            self._doc.write({"total_j": self.total_j, "saved_unix_s": time.time()})
        except (OSError, ValueError) as e:
            log.warning("event=energy_counter_save_failed error=%r", str(e))


def _ema(old: float | None, new: float | None, weight: float = 0.2) -> float | None:
    if new is None:
        return old
    return new if old is None else old + weight * (new - old)


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


class Reporter:
    """Builds and sends telemetry; observes every finished request."""

    def __init__(
        self,
        *,
        device_id: str,
        telemetry_topic: str,
        events_topic: str,
        sender: Sender,
        sampler: Sampler | None,
        counter: EnergyCounter,
        interval_s: float,
        events: bool = True,
        stats: Callable[[], Mapping[str, Any]] = dict,
        clock: Callable[[], float] = time.monotonic,
        tool_events_topic: str | None = None,
        log_arguments: bool = False,
    ) -> None:
        self.device_id = device_id
        self.tool_events_topic = tool_events_topic
        self.log_arguments = log_arguments
        self.telemetry_topic = telemetry_topic
        self.events_topic = events_topic
        self.sender = sender
        self.sampler = sampler
        self.counter = counter
        self.interval_s = interval_s
        self.events = events
        self._stats = stats
        self._clock = clock
        self.started_s = clock()
        self._last_t: float | None = None
        self.tokens_per_s: float | None = None
        self.tokens_per_joule: float | None = None
        self.requests = {"result": 0, "error": 0}
        self.errors: dict[str, int] = {}
        self.routes: dict[str, int] = {}
        self.guardian_input: dict[str, int] = {}
        self.guardian_output: dict[str, int] = {}
        self.tools = ToolCounts()  # tool calls decided and blocked, client and device
        self._pending: set[asyncio.Task[None]] = set()

    # --- per request -------------------------------------------------------------------------

    def observe(self, request: Request, result: Result | None, error: EdgedError | None) -> None:
        """Called by the pipeline when a request ends (event loop; must not block)."""
        if result is not None:
            self.requests["result"] += 1
            r = result
            key = f"{r.route.backend}:{','.join(r.route.reasons)}"
            self.routes[key] = self.routes.get(key, 0) + 1
            gen_s = None
            if r.timing.ttft_ms is not None and r.usage.completion_tokens > 1:
                gen_s = (r.timing.total_ms - r.timing.ttft_ms) / 1000
            if gen_s and gen_s > 0:
                self.tokens_per_s = _ema(self.tokens_per_s, (r.usage.completion_tokens - 1) / gen_s)
            self.tokens_per_joule = _ema(self.tokens_per_joule, r.energy.tokens_per_joule)
            if r.guardian is not None:
                for k, v in r.guardian.input.items():
                    self.guardian_input[k] = self.guardian_input.get(k, 0) + v
                for k, v in r.guardian.output.items():
                    self.guardian_output[k] = self.guardian_output.get(k, 0) + v
        else:
            self.requests["error"] += 1
            code = error.code if error is not None else "internal"
            self.errors[code] = self.errors.get(code, 0) + 1
        if self.events:
            self._send(self.events_topic, self.event(request, result, error))

    def _send(self, topic: str, record: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self.sender.send(topic, record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def observe_tool(self, decision: ToolDecision) -> None:
        """The guardian decided a tool call (event loop; must not block): counted, and one
        audit event."""
        self.tools.decided(decision)
        if self.events and self.tool_events_topic is not None:
            self._send(self.tool_events_topic, self.tool_event(decision))

    def observe_step(self, step: AgentStep) -> None:
        """The agent loop dealt with a device call (event loop; must not block): counted."""
        self.tools.stepped(step)

    def tool_event(self, d: ToolDecision) -> dict[str, Any]:
        """The audit event of one tool decision; argument values only with ``log_arguments``
        (``log.log_prompts``)."""
        ev: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "device_id": self.device_id,
            "id": d.request_id,
            "ts_unix_s": round(time.time(), 3),
            "call_id": d.call_id,
            "tool": d.tool,
            "decision": d.decision,
            "rules": list(d.rules),
            "latency_us": round(d.latency_us, 2),
        }
        if self.log_arguments:
            ev["arguments"] = d.arguments
        return ev

    def event(
        self, request: Request, result: Result | None, error: EdgedError | None
    ) -> dict[str, Any]:
        """The per-request event: no prompt or answer text."""
        ev: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "device_id": self.device_id,
            "id": request.id,
            "ts_unix_s": round(time.time(), 3),
        }
        if result is not None:
            ev.update({"outcome": "result", **result_fields(result)})
        else:
            ev.update({"outcome": "error", "code": error.code if error else "internal"})
        return ev

    # --- periodic --------------------------------------------------------------------------

    def _accumulate(self, now: float) -> None:
        if self.sampler is None:
            return
        start = self._last_t if self._last_t is not None else now
        if now > start:
            pts = self.sampler.points(start, now)
            e = integrate(pts, start, now, max_gap_s=3 * self.sampler.period_s + 0.05)
            if e is not None:
                self.counter.add(e)
        self._last_t = now

    def _energy(self, idle_w: float | None) -> dict[str, Any]:
        if self.sampler is None or self.sampler.source.name == "null":
            # the null source's own reason: none configured, or why the one chosen failed
            why = getattr(self.sampler.source, "reason", None) if self.sampler else None
            reason = why if isinstance(why, str) and why else "no power source configured"
            return {"total_j": None, "idle_w": None, "reason": reason}
        return {
            # floored to the mJ: a report never shows more than was counted, so the
            # reported series never goes backwards, even across restarts
            "total_j": math.floor(self.counter.total_j * 1000) / 1000,
            "idle_w": _r(idle_w),
            "reason": self.counter.reason,
        }

    def snapshot(self) -> dict[str, Any]:
        """The periodic telemetry record (also what ``edged status`` shows)."""
        now = self._clock()
        self._accumulate(now)
        s = self.sampler.latest if self.sampler is not None else None
        healthy = self.sampler is not None and self.sampler.healthy()
        reason = (
            None
            if healthy
            else (
                self.sampler.why_not() if self.sampler is not None else "no power source configured"
            )
        )
        power: dict[str, Any] = {
            "source": self.sampler.source.name if self.sampler else "none",
            "estimated": bool(self.sampler and self.sampler.source.estimated),
            "total_w": _r(s.total_w) if s is not None and healthy else None,
            "rails_w": {k: _r(v) for k, v in s.rails_w.items()} if s is not None else {},
            "sample_hz": _r(self.sampler.hz, 1) if self.sampler else None,
            "reason": reason,
        }
        battery: dict[str, Any] = {
            "pct": _r(s.battery_pct, 1) if s else None,
            "charging": s.charging if s else None,
            "voltage_v": _r(s.battery_v) if s else None,
            "power_w": _r(s.battery_w) if s else None,
            "time_to_empty_s": _r(s.time_to_empty_s, 0) if s else None,
        }
        battery["reason"] = None if battery["pct"] is not None else "no battery reading"
        stats = dict(self._stats())
        return {
            "schema_version": SCHEMA_VERSION,
            "device_id": self.device_id,
            "ts_unix_s": round(time.time(), 3),
            "uptime_s": round(now - self.started_s, 1),
            "power": power,
            "battery": battery,
            "temps_c": {k: _r(v, 1) for k, v in s.temps_c.items()} if s else {},
            "throttled": s.throttled if s else None,
            "power_mode": power_mode(s),
            "energy": self._energy(stats.pop("idle_w", None)),
            "llm": {
                "tokens_per_s_avg": _r(self.tokens_per_s, 2),
                "tokens_per_joule_avg": _r(self.tokens_per_joule, 4),
                "queue_depth": stats.pop("queue_depth", None),
                "in_flight": stats.pop("in_flight", None),
            },
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "routes": dict(self.routes),
            "guardian": {"input": dict(self.guardian_input), "output": dict(self.guardian_output)},
            "tools": self.tools.snapshot(),
            **stats,
        }

    async def run(self) -> None:
        """Publish a snapshot every ``interval_s`` and save the energy counter.

        The first snapshot waits (at most one interval) until the sender would publish it
        at once, when the sender can tell (the outbox's ``wait_live``): the link connected
        and a backlog left from before the start drained. Otherwise the first record of
        every start could be composed just before that and go out late, as historical.
        """
        wait_live: Callable[[float], Awaitable[bool]] | None = getattr(
            self.sender, "wait_live", None
        )
        if wait_live is not None:
            try:
                await wait_live(self.interval_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=telemetry_wait_live_failed")
        while True:
            try:
                record = self.snapshot()
                await asyncio.get_running_loop().run_in_executor(None, self.counter.save)
                await self.sender.send(self.telemetry_topic, record)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=telemetry_failed")
            await asyncio.sleep(self.interval_s)


def power_mode(s: Any) -> dict[str, Any]:
    """Telemetry's ``power_mode`` from the latest sample: the nvpmodel mode, or nulls with
    the reason (a board without power modes, or no reading yet)."""
    mode = getattr(s, "power_mode", None) if s is not None else None
    if mode is None:
        why = "no power reading yet" if s is None else "no power modes on this board"
        return {
            "id": None,
            "name": None,
            "watts": None,
            "source": None,
            "clocks_mhz": {},
            "reason": why,
        }
    out: dict[str, Any] = mode.as_dict()
    return out
