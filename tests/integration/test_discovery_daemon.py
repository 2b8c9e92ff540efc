"""Against the real broker and daemon: Home Assistant discovery configs are removed when
discovery is turned off, and the first telemetry record after a start goes out live."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edged.telemetry.discovery import config_topics
from edged.telemetry.spool import Spool
from tests.helpers import Broker, Client, Daemon

pytestmark = pytest.mark.integration


def retained(broker: Broker, device_id: str, quiet_s: float = 1.0) -> dict[str, bytes]:
    """The retained messages on this device's config topics, as a new subscriber gets them."""
    out: dict[str, bytes] = {}
    topics = set(config_topics(device_id, "homeassistant"))
    with Client(broker.port) as c:
        c.subscribe("homeassistant/sensor/+/+/config")
        end = time.monotonic() + quiet_s
        while time.monotonic() < end:
            try:
                msg = c.get(timeout_s=0.1)
            except queue.Empty:
                continue
            if msg.topic in topics and msg.retain:
                out[msg.topic] = msg.payload
    return out


def test_turning_discovery_off_removes_the_retained_configs(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_TELEMETRY__HOMEASSISTANT_DISCOVERY="true")
    deadline = time.monotonic() + 20
    while len(got := retained(broker, d.device_id, 0.5)) < 6 and time.monotonic() < deadline:
        pass
    assert set(got) == set(config_topics(d.device_id, "homeassistant")), d.logs()
    assert all(json.loads(p)["unique_id"].startswith(f"edged_{d.device_id}_") for p in got.values())
    assert d.stop() == 0
    # the same device, restarted with discovery off: it clears what it had announced
    d.extra_env["EDGED_TELEMETRY__HOMEASSISTANT_DISCOVERY"] = "false"
    d.start()
    deadline = time.monotonic() + 20
    while (left := retained(broker, d.device_id, 0.5)) and time.monotonic() < deadline:
        pass
    assert left == {}, d.logs()
    assert "event=discovery_announced configs=0 removed=6" in d.logs()


def test_the_first_record_after_a_start_is_live(
    make_daemon: Callable[..., Daemon], broker: Broker, tmp_path: Path
) -> None:
    d = make_daemon(start=False, EDGED_TELEMETRY__INTERVAL_S="3")
    # a backlog left by the previous run (the broker was away when it stopped)
    spool = Spool(tmp_path / f"spool-{d.device_id}", 1 << 20)
    old = {"schema_version": 1, "device_id": d.device_id, "ts_unix_s": time.time() - 60}
    topic = f"edged/{d.device_id}/telemetry"
    assert asyncio.run(spool.append({"topic": topic, "record": old}))
    with Client(broker.port) as c:
        c.subscribe(topic)
        for run in range(2):  # with the backlog, then a plain restart
            d.start(wait_online=False)
            got = []
            while not got or got[-1].get("historical"):
                got.append(c.get(timeout_s=30).json())
            if run == 0:
                assert [m.get("spool_seq") for m in got] == [1, None], got
                assert got[0]["ts_unix_s"] == old["ts_unix_s"]
            else:
                assert len(got) == 1, got
            first = got[-1]
            # the record composed at the start, not one an interval later
            assert first["uptime_s"] < 3, first
            assert "historical" not in first and "spool_seq" not in first
            assert d.stop() == 0
            while not c.inbox.empty():  # the shutdown record
                assert not c.inbox.get_nowait().json().get("historical")
