"""Hostile and careless clients against the real daemon on real Mosquitto: generated
payloads by the thousand (ten thousand under the thorough profile), and MQTT 3.1.1 and 5
clients mixed.

The rule checked (docs/reliability.md): every request that has a safe reply address gets
exactly one final reply there, with a stable code when it is an error; nothing is published
outside the allowed reply prefixes; the daemon keeps serving; memory stays bounded.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.errors import WIRE_CODES
from edged.telemetry import discovery
from tests.fuzzing import examples
from tests.helpers import Broker, Client, Daemon, rss_mb
from tests.strategies import payloads

pytestmark = pytest.mark.integration

RSS_BOUND_MB = 40.0  # growth of the daemon's RSS over a whole run
# Most of the time goes to generating the payloads (about 6 ms each, see test_fuzz_wire):
# 10,000 took 70 s. 2,500 still send hundreds of each kind (too large, invalid UTF-8, deep
# JSON, bad reply addresses) through both protocols; `--hypothesis-profile=thorough` sends
# the full 10,000 (tests/fuzzing.py).
N_PAYLOADS = examples(default=2_500, thorough=10_000)


def published_by_the_daemon_ok(topic: str, device_id: str) -> bool:
    """Where edged may publish: its own topics (never a request topic) or a reply prefix."""
    if any(c in topic for c in "+#") or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in topic):
        return False
    own = f"edged/{device_id}/"
    if topic.startswith(own):
        first = topic[len(own) :].partition("/")[0]
        return first in ("response", "telemetry", "status", "events")
    # its Home Assistant discovery configs (removed at start when discovery is off): the spy
    # sees them when the daemon is slow to get to them, as on a loaded machine
    ha = f"homeassistant/sensor/{discovery.node_id(device_id)}/"
    if topic.startswith(ha) and topic.endswith("/config"):
        return topic[len(ha) : -len("/config")].isidentifier()
    return topic.startswith("reply/")


@pytest.mark.slow
def test_thousands_of_generated_payloads_through_the_daemon(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    """Hypothesis payloads (tests/strategies.py), each published by an MQTT v5 client with a
    Response Topic and Correlation Data (so each has a safe reply address and must get
    exactly one final reply) or by an MQTT 3.1.1 client (no properties: the reply goes to
    ``reply_to`` or the default topic, if either is acceptable, else nowhere)."""
    d = make_daemon(EDGED_LOCAL__BACKEND="fake", EDGED_INGRESS__QUEUE_LIMIT="64")
    assert d.proc is not None
    request_topic = f"edged/{d.device_id}/request"
    sent: dict[bytes, bytes] = {}  # correlation data -> payload (v5 only)
    finals: Counter[bytes] = Counter()
    codes: Counter[str] = Counter()
    bad_topics: list[str] = []
    sent_v3 = 0
    seen_v3_replies = 0

    with (
        Client(broker.port) as v5,
        Client(broker.port, protocol=paho.MQTTv311) as v3,
        Client(broker.port) as spy,
    ):
        v5.subscribe("reply/fz")
        spy.subscribe("#")
        rss_start = rss_mb(d.proc.pid)

        def pump(max_outstanding: int, patience_s: float = 30.0) -> None:
            nonlocal seen_v3_replies
            last_progress = time.monotonic()
            while True:
                while True:  # everything the spy saw: only where edged may publish
                    try:
                        m = spy.inbox.get_nowait()
                    except queue.Empty:
                        break
                    if m.retain or m.topic == request_topic:
                        continue
                    if not published_by_the_daemon_ok(m.topic, d.device_id):
                        bad_topics.append(m.topic)
                    elif not m.topic.startswith("reply/fz") and m.correlation_data is None:
                        seen_v3_replies += 1
                if len(sent) - len(finals) <= max_outstanding:
                    return
                try:
                    m = v5.get(timeout_s=0.5)
                except queue.Empty:
                    if time.monotonic() - last_progress > patience_s:
                        return  # the assertions below say what is missing
                    continue
                last_progress = time.monotonic()
                body = m.json()
                if body["type"] in ("result", "error"):
                    assert m.correlation_data is not None
                    finals[m.correlation_data] += 1
                    codes[str(body.get("code", "result"))] += 1

        @settings(
            max_examples=N_PAYLOADS,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(payloads, st.booleans())
        def publish(payload: bytes, as_v5: bool) -> None:
            nonlocal sent_v3
            if as_v5 or sent_v3 * 4 >= len(sent):  # about one in five by 3.1.1
                corr = f"f{len(sent)}".encode()
                sent[corr] = payload
                v5.publish(
                    request_topic,
                    payload,
                    response_topic="reply/fz",
                    correlation_data=corr,
                    wait=False,
                )
            else:
                sent_v3 += 1
                v3.publish(request_topic, payload, wait=False)
            pump(max_outstanding=64)

        publish()
        pump(max_outstanding=0)
        rss_end = rss_mb(d.proc.pid)

    total = len(sent) + sent_v3
    assert total >= N_PAYLOADS
    print(
        f"\n{len(sent)} by MQTT v5, {sent_v3} by 3.1.1; finals: {dict(codes)}; "
        f"3.1.1 replies seen: {seen_v3_replies}; RSS {rss_start:.0f} -> {rss_end:.0f} MB"
    )
    missing = [sent[c][:200] for c in sent if c not in finals]
    assert not missing, f"{len(missing)} requests never got a final reply, e.g. {missing[:3]}"
    assert set(finals) == set(sent)  # and nothing answered that was not asked
    twice = [sent[c][:200] for c, n in finals.items() if n > 1]
    assert not twice, f"answered more than once: {twice[:3]}"
    assert set(codes) - {"result"} <= set(WIRE_CODES), codes
    assert codes["result"] > 0 and codes["bad_request"] > 0 and codes["too_large"] > 0
    assert not bad_topics, f"published outside the allowed topics: {sorted(set(bad_topics))[:5]}"
    assert sent_v3 > N_PAYLOADS // 10 and seen_v3_replies > 0  # 3.1.1 clients were served as well
    assert d.proc.poll() is None
    assert rss_end < rss_start + RSS_BOUND_MB, (rss_start, rss_end)
    # and it still answers an ordinary request
    with Client(broker.port) as c:
        c.subscribe("reply/after")
        c.publish(
            request_topic,
            json.dumps({"id": "after", "prompt": "still here?"}),
            response_topic="reply/after",
        )
        assert c.collect("after")[-1].json()["text"] == "still here?"


def test_mqtt_311_and_5_clients_mixed(make_daemon: Callable[..., Daemon], broker: Broker) -> None:
    """Clients of both protocol versions at once, each on its own thread: every request is
    answered once where its client's version lets it ask; the one with no safe reply address
    is dropped with a log line."""
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    topic = f"edged/{d.device_id}/request"
    tag = uuid.uuid4().hex[:6]
    failures: list[str] = []
    answered: Counter[str] = Counter()

    def v5_client(n: int) -> None:
        with Client(broker.port) as c:
            c.subscribe(f"reply/{tag}/v5/{n}")
            for i in range(20):
                rid = f"{tag}-5-{n}-{i}"
                c.publish(
                    topic,
                    json.dumps({"id": rid, "prompt": f"five {n} {i}"}),
                    response_topic=f"reply/{tag}/v5/{n}",
                    correlation_data=rid.encode(),
                )
                msgs = c.collect(rid, timeout_s=30)
                final = msgs[-1]
                if (
                    final.json().get("text") != f"five {n} {i}"
                    or final.correlation_data != rid.encode()
                ):
                    failures.append(f"v5 {rid}: {final.payload[:200]!r}")
                answered["v5"] += 1

    def v3_client(n: int) -> None:
        with Client(broker.port, protocol=paho.MQTTv311) as c:
            c.subscribe(f"reply/{tag}/v3/{n}")
            c.subscribe(f"edged/{d.device_id}/response/+")
            for i in range(20):
                rid = f"{tag}-3-{n}-{i}"
                body: dict[str, object] = {"id": rid, "prompt": f"three {n} {i}"}
                if i % 2:  # half name a reply topic in the body, half use the default topic
                    body["reply_to"] = f"reply/{tag}/v3/{n}"
                    where = f"reply/{tag}/v3/{n}"
                else:
                    where = f"edged/{d.device_id}/response/{rid}"
                c.publish(topic, json.dumps(body))
                msgs = c.collect(rid, timeout_s=30)
                final = msgs[-1]
                if (
                    final.json().get("text") != f"three {n} {i}"
                    or final.topic != where
                    or {m.topic for m in msgs} != {where}
                ):
                    failures.append(f"v3 {rid}: {final.topic} {final.payload[:200]!r}")
                answered["v3"] += 1

    def guarded(client: Callable[[int], None], n: int) -> None:
        try:
            client(n)
        except Exception as e:  # a thread's exception would otherwise pass unseen
            failures.append(f"{client.__name__}({n}): {e!r}")

    threads = [
        threading.Thread(target=f, args=(n,)) for n in range(3) for f in (v5_client, v3_client)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures[:5]
    assert answered == {"v5": 60, "v3": 60}

    # 3.1.1 and a refused reply_to: the error goes to the default topic, since the id is known
    with Client(broker.port, protocol=paho.MQTTv311) as c:
        rid = f"{tag}-bad-reply"
        c.subscribe(f"edged/{d.device_id}/response/{rid}")
        c.subscribe("reply/#")
        c.publish(topic, json.dumps({"id": rid, "prompt": "x", "reply_to": "reply/+"}))
        final = c.get(timeout_s=10)
        assert final.topic == f"edged/{d.device_id}/response/{rid}"
        assert final.json()["code"] == "bad_request"
        assert "reply_to refused" in final.json()["message"]
        # 3.1.1 and no id to be read: nowhere safe to answer; logged, not published
        c.publish(topic, b"\xff not json")
        with pytest.raises(queue.Empty):
            c.get(timeout_s=1.0)
    deadline = time.monotonic() + 5
    while "no_safe_reply_address" not in d.logs():
        assert time.monotonic() < deadline, d.logs()[-2000:]
        time.sleep(0.05)
    assert d.proc is not None and d.proc.poll() is None


def test_a_retained_request_is_not_served_again_at_every_reconnect(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    """A client that publishes its request retained: the broker would hand it to edged again
    at every subscription (each reconnect, each restart). edged serves what arrives live
    once, and ignores the stale retained copy, with a log line."""
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    topic = f"edged/{d.device_id}/request"
    rid = f"ret-{uuid.uuid4().hex[:6]}"
    with Client(broker.port, protocol=paho.MQTTv311) as c:
        c.subscribe(f"reply/{rid}")
        c._c.publish(
            topic,
            json.dumps({"id": rid, "prompt": "once", "reply_to": f"reply/{rid}"}),
            qos=1,
            retain=True,
        ).wait_for_publish(10)
        assert c.collect(rid, timeout_s=10)[-1].json()["text"] == "once"  # served live
        d.stop()
        d.start()  # subscribes again: the broker sends the retained copy
        deadline = time.monotonic() + 10
        while "event=retained_request_ignored" not in d.logs():
            assert time.monotonic() < deadline, d.logs()[-2000:]
            time.sleep(0.05)
        with pytest.raises(queue.Empty):
            m = c.get(timeout_s=1.0)
            raise AssertionError(f"the retained copy was answered: {m.payload!r}")
        c._c.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)  # clear it


@pytest.mark.parametrize("qos", [0, 2])
def test_requests_published_at_qos_0_and_2_are_answered_once(
    make_daemon: Callable[..., Daemon], broker: Broker, qos: int
) -> None:
    """edged subscribes at QoS 1: a QoS 2 request arrives as QoS 1 (acknowledged after its
    final reply), a QoS 0 one as QoS 0 (nothing to acknowledge, nothing redelivered)."""
    d = make_daemon(EDGED_LOCAL__BACKEND="fake")
    rid = f"q{qos}-{uuid.uuid4().hex[:6]}"
    with Client(broker.port) as c:
        c.subscribe(f"reply/{rid}")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = f"reply/{rid}"
        c._c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": rid, "prompt": f"qos {qos}"}),
            qos=qos,
            properties=props,
        ).wait_for_publish(10)
        msgs = c.collect(rid, timeout_s=10)
        assert msgs[-1].json()["type"] == "result" and msgs[-1].json()["text"] == f"qos {qos}"
        with pytest.raises(queue.Empty):  # and nothing more
            m = c.get(timeout_s=1.0)
            raise AssertionError(f"more after the final reply: {m.payload!r}")
