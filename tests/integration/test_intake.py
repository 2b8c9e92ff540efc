"""Intake that can always say ``busy`` (issue 12), and the in-flight journal that keeps a
request in flight when edged dies served once after the restart.

A request is acknowledged to the broker once it is journalled (``state_dir/inflight.journal``)
or refused, so long requests no longer hold the broker's Receive Maximum window shut.
"""

from __future__ import annotations

import json
import queue
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from bench.intake import run_scenario
from edged.store import decode_line
from tests.helpers import Broker, Client, Daemon

pytestmark = pytest.mark.integration


def journal_live(d: Daemon) -> dict[str, dict[str, Any]]:
    """The admit records without a done record in the daemon's journal file."""
    path = d.log_path.parent / f"state-{d.device_id}" / "inflight.journal"
    live: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return live
    for line in path.read_bytes().split(b"\n"):
        ok, rec = decode_line(line)
        if not ok:
            continue
        if rec["op"] == "admit":
            live[rec["id"]] = rec
        else:
            live.pop(rec["id"], None)
    return live


def journal_empties(d: Daemon, timeout_s: float = 10.0) -> bool:
    """Whether every journalled request has its done record within ``timeout_s`` (they are
    written after the final reply, on the journal's own thread)."""
    deadline = time.monotonic() + timeout_s
    while journal_live(d):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def events(d: Daemon, event: str, rid: str) -> int:
    return sum(
        1
        for line in d.logs().splitlines()
        if f"event={event} " in line + " " and f"id={rid}" in line.split()
    )


def drain(c: Client, rid: str, quiet_s: float) -> list[dict[str, Any]]:
    """Every message for ``rid`` until none has come for ``quiet_s``."""
    out: list[dict[str, Any]] = []
    while True:
        try:
            body = c.get(timeout_s=quiet_s).json()
        except queue.Empty:
            return out
        if body.get("id") == rid:
            out.append(body)


def test_busy_is_said_at_once_while_long_requests_fill_the_queue(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    """8 long requests (12 s each, a chunk every 0.5 s) fill queue_limit; then 100 short ones
    at 50/s. Each short one gets ``busy`` within 3 s of being sent, all of them before any
    long request ends, and each long request ends with one final reply.

    Before the journal, 56 got ``busy`` and the other 44 waited until the long requests
    ended (about 10 s here): PUBACKs went out in arrival order after each final reply, and
    the broker stops delivering at 64 unacknowledged messages."""
    d = make_daemon(
        EDGED_LOCAL__BACKEND="fake", EDGED_LOCAL__FAKE_DELAY_S="0.5", EDGED_INGRESS__QUEUE_LIMIT="8"
    )
    o = run_scenario(
        broker.port,
        d.device_id,
        long_n=8,
        long_s=12.0,
        chunk_s=0.5,
        short_n=100,
        rate_per_s=50.0,
        timeout_s=40,
    )
    codes = [code for _, code in o.short_final.values()]
    assert len(o.short_final) == 100, f"{100 - len(o.short_final)} got no reply\n{d.logs()[-3000:]}"
    assert codes == ["busy"] * 100
    latencies = o.busy_latencies_s()
    assert latencies[-1] < 3.0, latencies[-10:]  # the old code: about 10 s for 44 of them
    assert o.long_first_final_s is not None
    assert max(t for t, _ in o.short_final.values()) < o.long_first_final_s  # while streaming
    assert o.long_finals == {f"long{i}": ["result"] for i in range(8)}
    assert journal_empties(d), journal_live(d)  # every long one recorded done


def test_killed_mid_request_is_served_once_from_the_journal(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    """SIGKILL while a request streams: it was acknowledged when journalled, so the broker has
    nothing to redeliver; the journal has it, and the restarted edged serves it once, whole.
    A second restart does not serve it again."""
    d = make_daemon(EDGED_LOCAL__BACKEND="fake", EDGED_LOCAL__FAKE_DELAY_S="0.1")
    pieces = [f"j{i} " for i in range(40)]  # 4 s of streaming
    rid = f"jk{uuid.uuid4().hex[:6]}"
    with Client(broker.port) as c:
        c.subscribe("reply/journal")
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": rid, "prompt": json.dumps(pieces), "max_tokens": 40}),
            response_topic="reply/journal",
            correlation_data=b"corr-1",
        )
        first = c.get(timeout_s=10).json()
        assert first["type"] == "chunk"
        time.sleep(0.3)  # still streaming (4 s); its PUBACK went out once it was journalled
        d.stop(signal.SIGKILL)
        live = journal_live(d)
        assert list(live) == [rid]  # on disk, with its reply address
        assert live[rid]["reply"]["topic"] == "reply/journal"
        d.start()
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        corr: list[bytes | None] = []
        while time.monotonic() < deadline and not any(
            r["type"] in ("result", "error") for r in replies
        ):
            m = c.get(timeout_s=10)
            body = m.json()
            if body.get("id") == rid:
                replies.append(body)
                corr.append(m.correlation_data)
        replies += drain(c, rid, 1.0)
        finals = [r for r in replies if r["type"] in ("result", "error")]
        assert [f["type"] for f in finals] == ["result"], finals
        assert finals[0]["text"] == "".join(pieces)
        assert set(corr) == {b"corr-1"}  # the journalled Correlation Data
        assert events(d, "journal_replayed", rid) == 1
        assert events(d, "redelivery_ignored", rid) == 0  # acknowledged before the kill
        assert journal_empties(d), journal_live(d)
        # stopped and started again: nothing is left to serve
        assert d.stop() == 0
        d.start()
        assert drain(c, rid, 2.0) == []
    assert events(d, "journal_replayed", rid) == 1


def test_a_journalled_request_whose_deadline_passed_while_down_ends_as_timeout(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake", EDGED_LOCAL__FAKE_DELAY_S="0.1")
    pieces = [f"t{i} " for i in range(40)]
    rid = f"jt{uuid.uuid4().hex[:6]}"
    with Client(broker.port) as c:
        c.subscribe("reply/journal-t")
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps(
                {"id": rid, "prompt": json.dumps(pieces), "max_tokens": 40, "deadline_ms": 2500}
            ),
            response_topic="reply/journal-t",
        )
        assert c.get(timeout_s=10).json()["type"] == "chunk"
        d.stop(signal.SIGKILL)
        assert rid in journal_live(d)
        time.sleep(2.6)  # its deadline passes while edged is down
        drain(c, rid, 0.3)  # what the first attempt sent
        d.start()
        replies = drain(c, rid, 3.0)
    finals = [r for r in replies if r["type"] in ("result", "error")]
    assert [(f["type"], f.get("code")) for f in finals] == [("error", "timeout")], replies
    assert not [r for r in replies if r["type"] == "chunk"]  # no late text either
    assert journal_empties(d), journal_live(d)
