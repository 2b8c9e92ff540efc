"""Damage in the telemetry spool, through the real daemon: counted in telemetry (issue 12)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.helpers import Broker, Client, Daemon

pytestmark = pytest.mark.integration


def test_a_spool_segment_overwritten_with_garbage_is_counted_in_telemetry(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(start=False, EDGED_LOCAL__BACKEND="fake", EDGED_TELEMETRY__INTERVAL_S="1")
    spool = d.log_path.parent / f"spool-{d.device_id}"
    spool.mkdir()
    garbage = spool / "seg-00000003.jsonl"
    garbage.write_bytes(os.urandom(20_000))
    with Client(broker.port) as c:
        c.subscribe(f"edged/{d.device_id}/telemetry")
        d.start()
        first = c.get(timeout_s=30).json()
        later = c.get(timeout_s=30).json()
    assert first["spool_corrupt"] >= 1  # known before the first record was composed
    assert later["spool_corrupt"] == first["spool_corrupt"]  # counted once, not per record
    assert not garbage.exists()  # nothing intact in it: deleted at start
    assert "event=spool_corrupt_lines" in d.logs() or "event=spool_torn_line" in d.logs()
