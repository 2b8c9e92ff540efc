"""Barge-in through the real daemon and a real Mosquitto: a cancel on
``edged/<device>/cancel`` ends a request with exactly one final reply, a ``cancelled``
result, and nothing after it, while the real model decodes, while a request waits behind
another, and while the scripted remote (tests.scripted_cloud) waits or streams.

How soon the final comes is measured by bench/cancel.py, not asserted here: these tests
assert order and uniqueness only.
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import Broker, Client, Daemon
from tests.scripted_cloud import ScriptedCloud, cloud_env, finish, stream, text

pytestmark = pytest.mark.integration

LONG = "Count from 1 to 400, one number per line, and say nothing else."


def send(c: Client, d: Daemon, body: dict[str, Any]) -> str:
    rid = str(body.get("id") or uuid.uuid4().hex[:10])
    req = {"id": rid, "max_tokens": 300, "temperature": 0, **body}
    c.publish(f"edged/{d.device_id}/request", json.dumps(req), response_topic="reply/cx")
    return rid


def cancel(c: Client, d: Daemon, payload: bytes | str) -> None:
    c.publish(f"edged/{d.device_id}/cancel", payload)


class Replies:
    """Every reply on ``reply/cx``, by request id, in arrival order."""

    def __init__(self, c: Client) -> None:
        self.c = c
        self.by_id: dict[str, list[dict[str, Any]]] = {}

    def pump(self, timeout_s: float) -> None:
        try:
            msg = self.c.get(timeout_s=timeout_s)
        except queue.Empty:
            return
        body = msg.json()
        self.by_id.setdefault(str(body.get("id")), []).append(body)

    def chunks(self, rid: str) -> list[str]:
        return [m["text"] for m in self.by_id.get(rid, []) if m["type"] == "chunk"]

    def final(self, rid: str) -> dict[str, Any] | None:
        finals = [m for m in self.by_id.get(rid, []) if m["type"] in ("result", "error")]
        return finals[0] if finals else None

    def until(self, cond: Callable[[], bool], timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < end, self.by_id
            self.pump(0.05)

    def settle(self, s: float = 0.7) -> None:
        """Take whatever else arrives within ``s`` (nothing may follow a final)."""
        end = time.monotonic() + s
        while time.monotonic() < end:
            self.pump(0.05)

    def one_final_last(self, rid: str) -> dict[str, Any]:
        msgs = self.by_id[rid]
        finals = [m for m in msgs if m["type"] in ("result", "error")]
        assert len(finals) == 1 and msgs[-1] is finals[0], msgs
        return finals[0]


def check_cancelled(r: Replies, rid: str) -> dict[str, Any]:
    final = r.one_final_last(rid)
    assert final["type"] == "result", final
    assert final["finish_reason"] == "cancelled"
    assert final["text"] == "".join(r.chunks(rid))
    assert "energy" in final and "usage" in final
    return final


# --- the real local model ---------------------------------------------------------------------


def test_cancel_while_decoding_and_while_queued(shared_daemon: Daemon, broker: Broker) -> None:
    d = shared_daemon
    with Client(broker.port) as c:
        c.subscribe("reply/cx")
        r = Replies(c)
        a = send(c, d, {"prompt": LONG})
        b = send(c, d, {"prompt": LONG})  # waits behind a (one decode at a time)
        r.until(lambda: r.chunks(a) or r.final(a) is not None)
        assert r.final(a) is None, "the answer ended before it could be cancelled"
        cancel(c, d, json.dumps({"id": b}))  # queued: ends at once, never decoded
        r.until(lambda: r.final(b) is not None)
        assert r.final(a) is None  # a was still decoding when b's final came
        cancel(c, d, json.dumps({"id": a}))
        r.until(lambda: r.final(a) is not None)
        cancel(c, d, json.dumps({"id": a}))  # finished now: changes nothing
        r.settle()

        fb = check_cancelled(r, b)
        assert r.chunks(b) == [] and fb["text"] == ""
        assert fb["usage"]["completion_tokens"] == 0
        fa = check_cancelled(r, a)
        produced = fa["usage"]["completion_tokens"]
        assert r.chunks(a) and produced >= len(r.chunks(a)) and produced < 300
        assert isinstance(fa["usage"]["prompt_tokens"], int)  # the decode's own count

        # the device serves the next request normally
        c2 = send(c, d, {"prompt": "Say hi.", "max_tokens": 4})
        r.until(lambda: r.final(c2) is not None)
        assert r.one_final_last(c2)["type"] == "result"
    logs = d.logs()
    assert f"event=cancel_requested id={a}" in logs and f"event=cancel_requested id={b}" in logs
    assert f"event=cancel_ignored id={a} reason=not_in_flight" in logs


# --- the scripted remote ----------------------------------------------------------------------


@pytest.fixture
def cloud_daemon(make_daemon: Callable[..., Daemon], cloud: ScriptedCloud) -> Daemon:
    cloud.clear()
    return make_daemon(
        **cloud_env(
            cloud,
            EDGED_CLOUD__READ_TIMEOUT_S="30",
            EDGED_CLOUD__FIRST_TOKEN_TIMEOUT_S="30",
        ),
    )


def test_cancel_while_the_remote_streams_and_while_it_is_awaited(
    broker: Broker, cloud_daemon: Daemon, cloud: ScriptedCloud
) -> None:
    d = cloud_daemon
    words = [f"w{i} " for i in range(200)]
    cloud.script(
        stream(text(*words), finish("stop"), pace_s=0.05),  # streams for about 10 s
        stream(text("late"), finish("stop"), pace_s=20.0),  # its first text after 20 s
    )
    with Client(broker.port) as c:
        c.subscribe("reply/cx")
        r = Replies(c)
        a = send(c, d, {"prompt": "talk", "route": "cloud"})
        r.until(lambda: len(r.chunks(a)) >= 3)
        cancel(c, d, json.dumps({"id": a}))
        r.until(lambda: r.final(a) is not None)
        b = send(c, d, {"prompt": "wait", "route": "cloud"})
        r.until(lambda: len(cloud.bodies) >= 2)  # b is waiting for the remote's first text
        cancel(c, d, json.dumps({"id": b}))
        r.until(lambda: r.final(b) is not None, timeout_s=15)
        r.settle()

        fa = check_cancelled(r, a)
        assert fa["route"]["backend"] == "cloud"
        assert 3 <= len(r.chunks(a)) < 200
        assert fa["usage"]["completion_tokens"] == len(r.chunks(a))
        fb = check_cancelled(r, b)
        assert fb["text"] == "" and r.chunks(b) == []


MALFORMED = [b"", b"nope", b"[]", b'{"id": 7}', b'{"id": "x y"}', b'{"id": "a", "more": 1}']


def test_malformed_and_unknown_cancels_change_nothing(
    broker: Broker, make_daemon: Callable[..., Daemon]
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    with Client(broker.port) as c:
        c.subscribe("reply/cx")
        r = Replies(c)
        for payload in MALFORMED:
            cancel(c, d, payload)
        cancel(c, d, json.dumps({"id": "never-sent"}))
        rid = send(c, d, {"prompt": "echo me", "max_tokens": 8})
        r.until(lambda: r.final(rid) is not None)
        r.settle(0.3)
        assert r.one_final_last(rid)["finish_reason"] != "cancelled"
        assert set(r.by_id) == {rid}  # no reply to a cancel
    logs = d.logs()
    assert logs.count("event=cancel_ignored reason=malformed") == len(MALFORMED)
    assert "event=cancel_ignored id=never-sent reason=not_in_flight" in logs
