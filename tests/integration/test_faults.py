"""Faults and hostile input against the real daemon: every request gets exactly one final
reply, nothing is served twice, the daemon keeps serving, memory stays bounded."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from edged.store import decode_line
from tests.helpers import Broker, Client, Daemon, rss_mb

pytestmark = pytest.mark.integration


def hostile_payloads(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """(id, payload) pairs; the id is where the final reply must say it came from."""
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        rid = f"h{i}"
        kind = rng.randrange(10)
        body: object
        if kind == 0:
            body = {"id": rid, "prompt": "x", "max_tokens": rng.choice([0, -1, 10**9, "5", True])}
        elif kind == 1:
            body = {"id": rid, "prompt": "x", "deadline_ms": rng.choice([-5, 0, 10**12, "soon"])}
        elif kind == 2:
            body = {"id": rid, "prompt": rng.choice([None, 5, "", [1]])}
        elif kind == 3:
            body = {"id": rid, "messages": [{"role": "robot", "content": "hi"}]}
        elif kind == 4:
            body = {"id": rid, "prompt": "x", "unknown": {"deep": [1, 2, 3]}}
        elif kind == 5:
            nest = "[" * rng.randint(17, 2000) + "]" * 0
            out.append((rid, b'{"id": "' + rid.encode() + b'", "x": ' + nest.encode()))
            continue
        elif kind == 6:
            out.append((rid, b'{"id": "' + rid.encode() + b'", "prompt": "\xff\xfe"}'))
            continue
        elif kind == 7:
            body = {"id": rid, "prompt": "x" * rng.randint(70_000, 90_000)}
        elif kind == 8:
            body = {"id": rid, "prompt": "x", "reply_to": rng.choice(["reply/+", "#", "a/b"])}
        else:
            body = {"id": rid, "prompt": "Say ok.", "max_tokens": 3}  # valid
        out.append((rid, json.dumps(body).encode()))
    return out


def test_hostile_input_each_gets_one_final_reply(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake", EDGED_INGRESS__QUEUE_LIMIT="64")
    assert d.proc is not None
    rng = random.Random(7)
    cases = hostile_payloads(rng, 600)
    finals: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    rss_start = rss_mb(d.proc.pid)
    with Client(broker.port) as c:
        c.subscribe("reply/h")
        for i, (rid, payload) in enumerate(cases):
            c.publish(
                f"edged/{d.device_id}/request",
                payload,
                response_topic="reply/h",
                correlation_data=rid.encode(),
            )
            if i % 50 == 49:
                time.sleep(0.05)
        deadline = time.monotonic() + 60
        while sum(finals.values()) < len(cases) and time.monotonic() < deadline:
            m = c.get(timeout_s=20)
            body = m.json()
            if body["type"] in ("result", "error"):
                assert m.correlation_data is not None
                finals[m.correlation_data.decode()] += 1
                codes[str(body.get("code", "result"))] += 1
    assert set(finals) == {rid for rid, _ in cases}
    assert max(finals.values()) == 1  # exactly one final reply each
    assert codes["result"] == sum(1 for rid, p in cases if b"Say ok." in p)
    assert codes["bad_request"] > 300 and codes["too_large"] > 20
    assert d.proc.poll() is None
    assert rss_mb(d.proc.pid) < rss_start + 40  # bounded: no per-request leak


def test_burst_published_while_down_is_all_answered_or_refused(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    assert d.stop() == 0
    ids = [f"b{i}" for i in range(200)]
    with Client(broker.port) as c:
        c.subscribe("reply/burst")
        for rid in ids:
            c.publish(
                f"edged/{d.device_id}/request",
                json.dumps({"id": rid, "prompt": "hi", "max_tokens": 2}),
                response_topic="reply/burst",
            )
        d.start()
        finals: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(finals) < len(ids) and time.monotonic() < deadline:
            body = c.get(timeout_s=20).json()
            if body["type"] in ("result", "error"):
                assert body["id"] not in finals, body  # never answered twice
                finals[body["id"]] = body.get("code", "result")
    assert set(finals) == set(ids)  # none lost
    assert set(finals.values()) <= {"result", "busy", "timeout"}
    # admission is bounded (queue_limit 8): what arrives past it is refused at once with
    # busy, not left waiting; at least a queue's worth is served
    assert list(finals.values()).count("result") >= 8


def test_killed_mid_request_is_redelivered_and_answered_once(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    # the fake backend with a slow stream: the request is in flight when edged dies
    d = make_daemon(EDGED_LOCAL__BACKEND="fake", EDGED_LOCAL__FAKE_DELAY_S="0.01")
    chunks = [f"w{i} " for i in range(400)]  # 4 s of streaming
    rid = f"k{uuid.uuid4().hex[:6]}"
    with Client(broker.port) as c:
        c.subscribe("reply/kill")
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": rid, "prompt": json.dumps(chunks), "max_tokens": 400}),
            response_topic="reply/kill",
        )
        first = c.get(timeout_s=10).json()
        assert first["type"] == "chunk"  # it is streaming: kill it before it finishes
        d.stop(signal.SIGKILL)
        d.start()
        finals = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                body = c.get(timeout_s=5).json()
            except Exception:
                break
            if body["type"] in ("result", "error"):
                finals.append(body)
    assert [f["type"] for f in finals] == ["result"]  # exactly one final reply
    assert finals[0]["id"] == rid


def test_answered_then_killed_before_the_ack_is_not_served_twice(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    """The final reply went out; the process died before its PUBACK could: the broker
    redelivers, and the id (kept on disk) shows it was answered."""
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    with Client(broker.port) as c:
        c.subscribe("reply/once")
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": "once-1", "prompt": "hi"}),
            response_topic="reply/once",
        )
        assert c.collect("once-1")[-1].json()["type"] == "result"
        time.sleep(0.3)  # the id reaches the disk
        d.stop(signal.SIGKILL)
        answered = (d.log_path.parent / f"state-{d.device_id}" / "answered-ids.txt").read_bytes()
        assert "once-1" in [decode_line(line)[1] for line in answered.splitlines()]
        # redelivery of the same id (DUP set by the broker, or a client retrying) after start
        d.start()
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": "once-1", "prompt": "hi"}),
            response_topic="reply/once",
        )
        body = c.get(timeout_s=10).json()
    # not served again: a non-DUP reuse of the id is refused (id null), never a second result
    assert body["type"] == "error" and body["id"] is None and "once-1" in body["message"]


def test_network_cut_is_detected_and_late_requests_end_as_timeout(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The broker frozen with SIGSTOP (a cut network: no RST, no FIN): edged notices within
    two keepalive intervals, and a request whose deadline passes meanwhile ends as
    `timeout`, never as a late answer."""
    own = Broker(tmp_path / "frozen")
    own.start()
    env = {
        "EDGED_LOCAL__BACKEND": "fake",
        "EDGED_LOCAL__FAKE_DELAY_S": "0.05",
        "EDGED_MQTT__KEEPALIVE_S": "5",
        "EDGED_MQTT__RECONNECT_MAX_S": "1",
    }
    d = Daemon(
        broker_port=own.port,
        device_id=f"n{uuid.uuid4().hex[:8]}",
        log_path=tmp_path / "edged.log",
        extra_env=env,
    )
    assert own.proc is not None
    try:
        d.start()
        with Client(own.port) as c:
            c.subscribe("reply/cut")
            chunks = [f"w{i} " for i in range(100)]  # 5 s of streaming, deadline 2 s
            c.publish(
                f"edged/{d.device_id}/request",
                json.dumps(
                    {
                        "id": "cut-1",
                        "prompt": json.dumps(chunks),
                        "max_tokens": 100,
                        "deadline_ms": 2000,
                    }
                ),
                response_topic="reply/cut",
            )
            assert c.get(timeout_s=10).json()["type"] == "chunk"
            own.proc.send_signal(signal.SIGSTOP)
            t_cut = time.monotonic()
            while "event=mqtt_connection_lost" not in d.logs():
                assert time.monotonic() - t_cut < 2 * 5 + 3, d.logs()  # two keepalives
                time.sleep(0.2)
            detected_s = time.monotonic() - t_cut
            own.proc.send_signal(signal.SIGCONT)
            finals = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not finals:
                body = c.get(timeout_s=30).json()
                if body["type"] in ("result", "error"):
                    finals.append(body)
        assert finals and finals[0]["type"] == "error" and finals[0]["code"] == "timeout"
        assert detected_s <= 13
    finally:
        with contextlib.suppress(Exception):
            own.proc.send_signal(signal.SIGCONT)
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        own.stop()
