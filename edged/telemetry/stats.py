"""The daemon's figures for the periodic telemetry record, and its alarms.

:func:`build_stats` gathers what the reporter adds to each record (``stats`` in
:class:`~edged.telemetry.reporter.Reporter`) from typed snapshots its owners hand out:
the backends' :class:`~edged.types.BackendStats`, the router's
:class:`~edged.types.CloudUsage`, the meter's idle baseline, the outbox and the sampler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from edged.config_backends import BackendEntry
from edged.energy.sampler import Sampler
from edged.telemetry.outbox import Outbox
from edged.types import BackendStats, CloudUsage


def build_stats(
    *,
    local: BackendStats,
    cloud: BackendStats | None,
    cloud_usage: CloudUsage,
    in_flight: int,
    ingress: Mapping[str, int],
    idle_w: float | None,
    outbox: Outbox | None,
    sampler: Sampler | None,
    profile: str | None,
    backends: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record's daemon figures (the reporter places them); ``backends``: per backend
    (:func:`backends_report`)."""
    return {
        "backends": dict(backends or {}),
        "queue_depth": local.queue_depth,
        "in_flight": in_flight,
        "idle_w": idle_w,
        "ingress": dict(ingress),
        "cloud": None
        if cloud is None
        else {
            "breaker": cloud.breaker,
            "requests_today": cloud_usage.requests_today,
            "tokens_today": cloud_usage.tokens_today,
        },
        "session_cache": local.sessions,
        "spool_dropped": outbox.dropped if outbox else 0,
        "spool_pending": outbox.spool.pending if outbox else 0,
        "spool_failed_writes": outbox.spool.failed_writes if outbox else 0,
        "spool_corrupt": outbox.spool.corrupt if outbox else 0,
        "profile": profile,
        "alarms": alarms(outbox=outbox, sampler=sampler, cloud=cloud),
    }


def alarms(
    *, outbox: Outbox | None, sampler: Sampler | None, cloud: BackendStats | None
) -> list[str]:
    """Conditions an operator should see (stable codes; telemetry's ``alarms``)."""
    out = []
    if outbox is not None and outbox.spool.failed_writes:
        out.append("spool_write_failed")  # disk full or unwritable: telemetry may be lost
    if outbox is not None and outbox.dropped:
        out.append("spool_dropped")
    if sampler is not None and sampler.failures:
        out.append("power_source_failing")
    if cloud is not None and cloud.breaker == "open":
        out.append("cloud_breaker_open")
    if cloud is not None and cloud.retry_after_s > 0:
        out.append("cloud_throttled")
    return out


class _Reports(Protocol):
    """What :func:`backends_report` reads from a backend (cached values, no I/O)."""

    def healthy(self) -> bool: ...

    def stats(self) -> BackendStats: ...

    @property
    def resident(self) -> bool: ...


class _Usage(Protocol):
    """What :func:`backends_report` reads from the router."""

    @property
    def table(self) -> Mapping[str, BackendEntry]: ...

    def usage_today(self, name: str) -> CloudUsage: ...


def backends_report(backends: Mapping[str, _Reports], router: _Usage) -> dict[str, Any]:
    """Per backend, by name: its trust class and kind (from the router's table), health,
    queue, breaker, measured tokens/s and today's requests and tokens (remote ones)."""
    out: dict[str, Any] = {}
    for name, backend in backends.items():
        s = backend.stats()
        entry = router.table.get(name)
        remote = entry is not None and entry.trust != "device"
        used = router.usage_today(name) if remote else None
        out[name] = {
            "kind": entry.kind if entry else None,
            "trust": entry.trust if entry else None,
            "healthy": backend.healthy(),
            "queue_depth": s.queue_depth,
            "breaker": s.breaker,
            "retry_after_s": round(s.retry_after_s, 3),
            "tokens_per_s": None if s.tokens_per_s is None else round(s.tokens_per_s, 2),
            "requests_today": used.requests_today if used else None,
            "tokens_today": used.tokens_today if used else None,
            # device models: in memory now (residency); remote: null
            "resident": None if remote else backend.resident,
        }
    return out
