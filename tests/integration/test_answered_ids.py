"""The answered-ids file against the real daemon and broker: damage on disk never stops edged
from starting and serving, and an id it answered is never served a second time (issue 12)."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged.store import decode_line, encode_line
from tests.helpers import Broker, Client, Daemon

pytestmark = pytest.mark.integration


def answered_file(d: Daemon) -> Path:
    return d.log_path.parent / f"state-{d.device_id}" / "answered-ids.txt"


def stored_ids(d: Daemon) -> list[Any]:
    return [decode_line(line)[1] for line in answered_file(d).read_bytes().splitlines()]


def request(c: Client, d: Daemon, rid: str, reply: str) -> None:
    c.publish(
        f"edged/{d.device_id}/request",
        json.dumps({"id": rid, "prompt": "hi"}),
        response_topic=reply,
        wait=False,
    )


def finals(c: Client, n: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The next ``n`` final replies (any id), in arrival order."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n:
        body = c.get(timeout_s=max(0.01, deadline - time.monotonic())).json()
        if body.get("type") in ("result", "error"):
            out.append(body)
    return out


def test_a_damaged_answered_ids_file_starts_serves_and_answered_ids_are_not_served_twice(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(start=False, EDGED_LOCAL__BACKEND="fake")
    path = answered_file(d)
    path.parent.mkdir(parents=True)
    # an old plain-format id, a checksummed one, invalid UTF-8, and a NUL-filled tail: what
    # an upgrade followed by a bad sector and a power cut leaves
    path.write_bytes(b"old-1\n" + encode_line("ans-1") + b"\xc3\x28\xff\xfe\n" + b"\x00" * 4096)
    d.start()  # it used to exit 1 with UnicodeDecodeError here
    assert "store_damage_skipped" in d.logs()
    with Client(broker.port) as c:
        c.subscribe("reply/dmg")
        request(c, d, "new-1", "reply/dmg")
        [body] = finals(c, 1)
        assert body["type"] == "result" and body["id"] == "new-1"
        deadline = time.monotonic() + 10
        while "new-1" not in stored_ids(d):  # appended off the event loop
            assert time.monotonic() < deadline
            time.sleep(0.05)
        d.stop(signal.SIGKILL)
        # the id answered after the damage is a whole line of its own, not merged with the tail
        assert stored_ids(d) == ["old-1", "ans-1", "new-1"]
        d.start()
        for rid in ("old-1", "ans-1", "new-1"):
            request(c, d, rid, "reply/dmg")
        got = finals(c, 3, timeout_s=30)
    # none is served again: each reuse is refused without the id, never a second result
    assert [b["type"] for b in got] == ["error"] * 3
    assert all(b["id"] is None for b in got)
    assert sorted(
        next(r for r in ("old-1", "ans-1", "new-1") if r in b["message"]) for b in got
    ) == ["ans-1", "new-1", "old-1"]


def test_requests_finishing_in_bursts_lose_no_answered_id(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    """1,100 requests with 128-character ids finishing 8 at a time, a clean stop, then the
    last 1,000 sent again: not one is served a second time (the old code served 59-70)."""
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    ids = [f"{i:05d}-" + "b" * 122 for i in range(1100)]
    assert all(len(r) == 128 for r in ids)
    with Client(broker.port) as c:
        c.subscribe("reply/burst")
        served: Counter[str] = Counter()
        for k in range(0, len(ids), 8):
            for rid in ids[k : k + 8]:
                request(c, d, rid, "reply/burst")
            for body in finals(c, len(ids[k : k + 8])):
                assert body["type"] == "result", body
                served[body["id"]] += 1
        assert served == Counter(ids)
        time.sleep(0.5)  # the last appends reach the disk
        assert d.stop() == 0
        d.start()
        again = ids[-1000:]
        for k in range(0, len(again), 8):
            for rid in again[k : k + 8]:
                request(c, d, rid, "reply/burst")
        got = finals(c, len(again), timeout_s=120)
    served_again = [b["id"] for b in got if b["type"] == "result"]
    assert served_again == []
    assert all(b["type"] == "error" and b["id"] is None for b in got)
