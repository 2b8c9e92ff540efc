"""Telemetry as the daemon runs it: the outbox (publish while connected, spool while not)
and the reporter (periodic records, per-request events, the device-tool audit) over it.

Started once the power sampler runs; closed after the requests in flight finished, with the
last record sent and the energy counter saved (docs/telemetry.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from edged.config import Config
from edged.energy.sampler import Sampler
from edged.mqtt.topics import Topics
from edged.telemetry.outbox import Outbox, Publisher
from edged.telemetry.reporter import EnergyCounter, Reporter
from edged.telemetry.spool import Spool


class Telemetry:
    """The outbox and the reporter for one run of the daemon."""

    def __init__(
        self,
        cfg: Config,
        topics: Topics,
        link: Publisher,
        sampler: Sampler,
        stats: Callable[[], Mapping[str, Any]],
    ) -> None:
        tcfg = cfg.telemetry
        self.topics = topics
        self.outbox = Outbox(link, Spool(tcfg.spool_dir, tcfg.spool_max_bytes))
        self.reporter = Reporter(
            device_id=cfg.device_id,
            telemetry_topic=topics.telemetry,
            events_topic=topics.request_events,
            sender=self.outbox,
            sampler=sampler,
            counter=EnergyCounter(tcfg.state_dir / "energy.json"),
            interval_s=tcfg.interval_s,
            events=tcfg.events,
            stats=stats,
            tool_events_topic=topics.tool_events,
            log_arguments=cfg.log.log_prompts,
        )

    async def open(self) -> None:
        """Open the spool (damage found now is in the first record)."""
        await self.outbox.spool.open()

    def start(self) -> list[asyncio.Task[Any]]:
        """The outbox's and the reporter's tasks."""
        return [
            asyncio.create_task(self.outbox.run(), name="telemetry-outbox"),
            asyncio.create_task(self.reporter.run(), name="telemetry"),
        ]

    async def close(self) -> None:
        """The last record, the counter saved, the outbox flushed (3 s at most); what fails
        here is lost with the process, never raised."""
        with contextlib.suppress(Exception):
            await self.outbox.send(self.topics.telemetry, self.reporter.snapshot())
            await asyncio.get_running_loop().run_in_executor(None, self.reporter.counter.save)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.outbox.flush(), 3.0)
