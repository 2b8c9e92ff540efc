"""Presence: the retained status message on ``<prefix>/<device>/status`` (docs/protocol.md),
and the Home Assistant discovery configs announced at each connection (docs/telemetry.md).

``online`` once the model is loaded and MQTT is connected; ``offline`` with a reason on a
clean shutdown, and as the last will the broker publishes when the connection is lost.
"""

from __future__ import annotations

import json
import math
import os
import time

from edged.config import Config
from edged.mqtt.link import Will
from edged.mqtt.topics import Topics
from edged.telemetry.discovery import Announcer, Publisher


def status_payload(cfg: Config, state: str, **extra: object) -> bytes:
    """The retained status message (``online`` / ``offline``)."""
    body: dict[str, object] = {
        "schema_version": 1,
        "state": state,
        "device_id": cfg.device_id,
        "ts_unix_s": round(time.time(), 3),
    }
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


class Presence:
    """What the daemon says about itself on its link. ``cfg`` is replaced on reload (whether
    discovery is on is then read at the next connection)."""

    def __init__(self, cfg: Config, topics: Topics, *, version: str, model: str) -> None:
        self.cfg = cfg
        self.topics = topics
        self.version = version
        self.model = model
        self.started_unix_s = time.time()

    def will(self) -> Will:
        """The last will: ``offline`` with reason ``connection_lost``."""
        payload = status_payload(self.cfg, "offline", reason="connection_lost")
        return Will(self.topics.status, payload)

    def online(self, link: Publisher) -> None:
        """Publish ``online`` (retained; on the link directly: the outbox never retains)."""
        payload = status_payload(
            self.cfg,
            "online",
            version=self.version,
            model=self.model,
            started_unix_s=round(self.started_unix_s, 3),
            pid=os.getpid(),
            request_topic=self.topics.request,
        )
        link.publish(self.topics.status, payload, qos=1, retain=True)

    def offline(self, link: Publisher, reason: str = "shutdown") -> None:
        """Publish ``offline`` with ``reason`` (retained), on a clean shutdown."""
        payload = status_payload(self.cfg, "offline", reason=reason)
        link.publish(self.topics.status, payload, qos=1, retain=True)

    async def announce(self, link: Publisher) -> bool:
        """The discovery configs, retained; also clears the sensors announced before when
        discovery is off now. True once the broker acknowledged them all."""
        tcfg = self.cfg.telemetry
        announcer = Announcer(
            tcfg.state_dir / "discovery.json",
            enabled=tcfg.homeassistant_discovery,
            device_id=self.cfg.device_id,
            prefix=tcfg.discovery_prefix,
            telemetry_topic=self.topics.telemetry,
            status_topic=self.topics.status,
            version=self.version,
            expire_after_s=math.ceil(3 * tcfg.interval_s),
        )
        return await announcer.announce(link)
