"""Presence: the retained status message on ``<prefix>/<device>/status`` (docs/protocol.md).

``online`` once the model is loaded and MQTT is connected; ``offline`` with a reason on a
clean shutdown, and as the last will the broker publishes when the connection is lost.
"""

from __future__ import annotations

import json
import time

from edged.config import Config


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
