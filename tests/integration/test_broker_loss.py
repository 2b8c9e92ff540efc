"""The broker killed (SIGKILL) with requests queued for an offline edged: what Mosquitto had
saved survives, what it had not is gone (docs/reliability.md, "The loss window when the broker is
killed", with the window a bench measured).

Each test runs its own Mosquitto (it kills it) and its own daemon with the fake backend. The
daemon is started once and stopped to leave a persistent session with its subscription in
the broker; requests published then are queued in that session.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Broker, Client, Daemon

pytestmark = pytest.mark.integration

# room for every queued request at once: they are all answered with results, none `busy`
DAEMON_ENV = {"EDGED_LOCAL__BACKEND": "fake", "EDGED_INGRESS__QUEUE_LIMIT": "64"}


def offline_daemon(broker: Broker, tmp_path: Path) -> Daemon:
    """A daemon that connected once (session and subscription now in the broker), stopped."""
    d = Daemon(
        broker_port=broker.port,
        device_id=f"l{uuid.uuid4().hex[:10]}",
        log_path=tmp_path / "edged.log",
        extra_env=DAEMON_ENV,
    )
    try:
        d.start()
    finally:
        assert d.stop() == 0
    return d


def publish_requests(port: int, d: Daemon, ids: list[str], reply_topic: str) -> None:
    """QoS 1, one at a time: each returns once the broker's PUBACK is in (accepted)."""
    with Client(port) as c:
        for rid in ids:
            body = {"id": rid, "prompt": f"echo {rid}", "stream": False}
            c.publish(f"edged/{d.device_id}/request", json.dumps(body), response_topic=reply_topic)


def saved(broker: Broker) -> bytes:
    """The broker's persistence file as it is on disk now (queued payloads are kept raw)."""
    db = broker.state_dir / "mosquitto.db"
    return db.read_bytes() if db.exists() else b""


def in_file(rid: str, db: bytes) -> bool:
    """Whether the request ``rid`` (its payload, as publish_requests wrote it) is in ``db``."""
    return f'"id": "{rid}"'.encode() in db


def wait_saved(broker: Broker, rid: str, timeout_s: float) -> float:
    """Seconds until the persistence file on disk holds the request ``rid``."""
    t0 = time.monotonic()
    while not in_file(rid, saved(broker)):
        assert time.monotonic() - t0 < timeout_s, f"{rid} not saved within {timeout_s} s"
        time.sleep(0.01)
    return time.monotonic() - t0


def finals_after_restart(
    broker: Broker, d: Daemon, expected: set[str], reply_topic: str
) -> dict[str, list[str]]:
    """Start edged against the restarted broker and gather the final replies, id -> their
    types (``result`` or an error code), until every ``expected`` id has one and a request
    sent afterwards (a marker) is answered too, then until the reply topic has been quiet
    for a second (a duplicate or a request that should have been lost would show by then)."""
    finals: dict[str, list[str]] = defaultdict(list)
    marker = f"marker-{uuid.uuid4().hex[:6]}"

    def record(body: dict[str, Any]) -> None:
        assert body["type"] in ("result", "error"), body  # stream false: finals only
        finals[body["id"]].append(body.get("code", body["type"]))

    with Client(broker.port) as c:
        c.subscribe(reply_topic)
        d.start()
        try:
            deadline = time.monotonic() + 20
            sent_marker = False
            while not (expected <= finals.keys() and marker in finals):
                if expected <= finals.keys() and not sent_marker:
                    request = {"id": marker, "prompt": "marker", "stream": False}
                    c.publish(
                        f"edged/{d.device_id}/request",
                        json.dumps(request),
                        response_topic=reply_topic,
                    )
                    sent_marker = True
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"missing finals: {sorted(expected - finals.keys())}"
                with contextlib.suppress(queue.Empty):
                    record(c.get(timeout_s=remaining).json())
            with contextlib.suppress(queue.Empty):
                while True:
                    record(c.get(timeout_s=1.0).json())
        finally:
            assert d.stop() == 0
    assert finals.pop(marker) == ["result"]
    return dict(finals)


def test_saving_on_every_change_keeps_every_accepted_request_across_sigkill(
    tmp_path: Path,
) -> None:
    broker = Broker(
        tmp_path / "broker", extra_conf="autosave_on_changes true\nautosave_interval 1\n"
    )
    broker.start()
    try:
        d = offline_daemon(broker, tmp_path)
        ids = [f"c{i:02d}" for i in range(30)]
        publish_requests(broker.port, d, ids, "reply/changes")
        # every PUBACK is in. Mosquitto sends the PUBACK first and saves after it (at the end
        # of the same loop iteration, a few ms): wait for that save, not for a timer
        assert wait_saved(broker, ids[-1], timeout_s=2.0) < 2.0
        on_disk = saved(broker)
        assert all(in_file(rid, on_disk) for rid in ids)
        broker.stop(signal.SIGKILL)
        broker.start()  # same port, same persistence directory
        finals = finals_after_restart(broker, d, set(ids), "reply/changes")
    finally:
        broker.stop()
    assert set(finals) == set(ids)  # every accepted request is answered after the restart...
    assert all(f == ["result"] for f in finals.values()), finals  # ...exactly once


def test_time_based_autosave_loses_what_was_accepted_after_the_last_save(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "broker", extra_conf="autosave_interval 3600\n")
    broker.start()
    try:
        d = offline_daemon(broker, tmp_path)
        before = [f"a{i:02d}" for i in range(10)]
        publish_requests(broker.port, d, before, "reply/timed")
        # a clean shutdown saves everything: the session and the queued requests
        broker.stop(signal.SIGTERM)
        broker.start()
        after = [f"b{i:02d}" for i in range(10)]
        publish_requests(broker.port, d, after, "reply/timed")  # all PUBACKed
        on_disk = saved(broker)
        # no save since the restart (the next is due in an hour): the file is the one
        # written at the clean shutdown
        assert all(in_file(rid, on_disk) for rid in before)
        assert not any(in_file(rid, on_disk) for rid in after)
        broker.stop(signal.SIGKILL)
        broker.start()
        finals = finals_after_restart(broker, d, set(before), "reply/timed")
    finally:
        broker.stop()
    # what was queued before the clean restart survives, each answered exactly once...
    assert set(finals) == set(before)
    assert all(f == ["result"] for f in finals.values()), finals
    # ...what the broker accepted after its last save is gone: the loss window exists
    assert not set(finals) & set(after)
