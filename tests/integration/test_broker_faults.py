"""The broker restarted (SIGTERM) or killed (SIGKILL) while edged streams an answer (issue 7):
edged reconnects with jittered back-off and resumes its session, every request gets exactly
one final reply, and a request is never served twice.

Each test runs its own Mosquitto (it stops it) and its own daemon with the fake backend,
one chunk every 0.2 s, so a request streams for seconds. The client is a real one: a
persistent session (clean_start False, session expiry 300 s), and after the
broker is back it reconnects and subscribes again by itself.

What is asserted is what docs/protocol.md promises ("Replies", "Delivery semantics"):
exactly one `result` per request, whose `text` is the whole answer. edged acknowledges a
request to the broker once it is in its in-flight journal (issue 12), so the broker holds
nothing of edged's to deliver again after an outage: no redelivery is seen (nor served).
Chunks are QoS 1 but nothing promises them across a broker outage: those published while
it is down may be lost (a SIGKILL loses the client's session, and a chunk resent before the
client has subscribed again reaches nobody), and one whose PUBACK was lost is resent, so it
can arrive twice. Chunks are therefore only
checked to be the answer's piece at their `seq`. How often a request was served is read
from the daemon itself: its telemetry counts admitted requests and dropped duplicates, and
its log names each redelivery it ignored.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edged.store import decode_line
from tests.helpers import Broker, Daemon

pytestmark = pytest.mark.integration

DELAY_S = 0.2  # per chunk
PIECES = [f"p{i:02d} " for i in range(30)]  # 6 s of streaming
ANSWER = "".join(PIECES)


def wait_until(
    cond: Callable[[], object], timeout_s: float, what: str, logs: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{logs()[-6000:]}"
        time.sleep(0.05)


class SessionClient:
    """An MQTT v5 client as a real application writes one: a persistent session, paho's own
    reconnect (every second), and its subscriptions made again on every connect (a broker
    that lost its state has forgotten them)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.topics = topics
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.messages: list[dict[str, Any]] = []  # in arrival order
        self.session_present: list[bool] = []  # one per CONNACK
        self.subacks = 0
        self._lock = threading.Lock()
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bf-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        c.reconnect_delay_set(1, 1)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 300
        # clean_start False from the start (the client id is new): Mosquitto saves to disk
        # only the sessions of clients that connected so
        c.connect("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
        c.loop_start()
        self._c = c

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            return
        with self._lock:
            self.session_present.append(bool(flags.session_present))
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])

    def _on_subscribe(self, *args: Any) -> None:
        with self._lock:
            self.subacks += 1

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.inbox.put(json.loads(msg.payload))

    def wait_subscribed(self, connects: int, timeout_s: float = 15.0) -> None:
        """Until the ``connects``-th connection has its subscriptions acknowledged."""
        wait_until(lambda: self.subacks >= connects, timeout_s, f"subscription #{connects}")

    def request(self, device_id: str, rid: str, pieces: list[str]) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = f"reply/{device_id}"
        body = {"id": rid, "prompt": json.dumps(pieces), "max_tokens": len(pieces)}
        info = self._c.publish(
            f"edged/{device_id}/request", json.dumps(body), qos=1, properties=props
        )
        info.wait_for_publish(10)
        assert info.is_published()

    def pump(self, timeout_s: float = 0.05) -> None:
        """Move what has arrived into ``messages``."""
        with contextlib.suppress(queue.Empty):
            self.messages.append(self.inbox.get(timeout=timeout_s))
            while True:
                self.messages.append(self.inbox.get_nowait())

    def replies(self, rid: str) -> list[dict[str, Any]]:
        return [b for b in self.messages if b.get("id") == rid and "type" in b]

    def chunks(self, rid: str) -> list[dict[str, Any]]:
        return [b for b in self.replies(rid) if b["type"] == "chunk"]

    def finals(self, rid: str) -> list[dict[str, Any]]:
        return [b for b in self.replies(rid) if b["type"] in ("result", "error")]

    def poll(self, cond: Callable[[], object], timeout_s: float) -> bool:
        """Take in messages until ``cond()`` holds (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.pump()
            if cond():
                return True
            if time.monotonic() > deadline:
                return False

    def wait_for(
        self, cond: Callable[[], object], timeout_s: float, what: str, logs: Callable[[], str] = str
    ) -> None:
        assert self.poll(cond, timeout_s), f"timed out waiting for {what}\n{logs()[-6000:]}"

    def telemetry(self, after_unix_s: float) -> list[dict[str, Any]]:
        """Live telemetry records composed after ``after_unix_s``."""
        return [
            b
            for b in self.messages
            if "ingress" in b and not b.get("historical") and b["ts_unix_s"] > after_unix_s
        ]

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


@contextlib.contextmanager
def rig(tmp_path: Path) -> Iterator[tuple[Broker, Daemon, SessionClient]]:
    """A broker of its own, a daemon (fake backend, slow stream, telemetry every 0.5 s) and
    a client subscribed to the daemon's replies and telemetry; all stopped afterwards."""
    broker = Broker(tmp_path / "broker", extra_conf="log_type all")
    broker.start()
    env = {
        "EDGED_LOCAL__BACKEND": "fake",
        "EDGED_LOCAL__FAKE_DELAY_S": str(DELAY_S),
        "EDGED_TELEMETRY__INTERVAL_S": "0.5",
    }
    d = Daemon(
        broker_port=broker.port,
        device_id=f"bf{uuid.uuid4().hex[:8]}",
        log_path=tmp_path / "edged.log",
        extra_env=env,
    )
    client: SessionClient | None = None
    try:
        d.start()
        client = SessionClient(
            broker.port, [f"reply/{d.device_id}", f"edged/{d.device_id}/telemetry"]
        )
        client.wait_subscribed(1)
        yield broker, d, client
    finally:
        if client is not None:
            client.close()
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        broker.stop()


def events(d: Daemon, event: str, since: int = 0) -> list[str]:
    """The daemon's log lines with ``event=<event>``, from character ``since`` of the log."""
    return [line for line in d.logs()[since:].splitlines() if f"event={event} " in line + " "]


def redeliveries_ignored(d: Daemon, rid: str) -> int:
    return sum(1 for line in events(d, "redelivery_ignored") if f"id={rid}" in line.split())


def saved(broker: Broker, text: str) -> bool:
    """Whether the broker's persistence file holds ``text`` (payloads and client ids are
    raw): ``'"id": "<rid>"'`` for a request, ``edged-<device_id>`` for edged's session."""
    db = broker.state_dir / "mosquitto.db"
    return db.exists() and text.encode() in db.read_bytes()


def request_saved(broker: Broker, rid: str) -> bool:
    return saved(broker, f'"id": "{rid}"')


def answered_on_device(d: Daemon, rid: str) -> bool:
    """Whether edged has sent ``rid``'s final reply (it then writes the id to disk)."""
    path = d.log_path.parent / f"state-{d.device_id}" / "answered-ids.txt"
    return path.exists() and rid in [decode_line(x)[1] for x in path.read_bytes().splitlines()]


def outage(
    broker: Broker,
    d: Daemon,
    sig: int,
    *,
    save_first: str | None = None,
    while_down: Callable[[], object] | None = None,
) -> int:
    """Take the broker down with ``sig`` (after making it save its state to disk with
    SIGUSR1, waiting until ``save_first`` is in the file), wait until edged has
    noticed and failed to reconnect at least once (and ``while_down`` holds), start it again
    on the same port and state. Returns the log offset from before the outage."""
    assert broker.proc is not None
    if save_first is not None:
        broker.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: saved(broker, save_first), 10, f"{save_first} saved by the broker")
    mark = len(d.logs())
    broker.stop(sig)
    wait_until(
        lambda: events(d, "mqtt_connection_lost", mark) and events(d, "mqtt_connect_failed", mark),
        15,
        "edged to retry",
        d.logs,
    )
    if while_down is not None:
        wait_until(while_down, 15, "the condition while the broker is down", d.logs)
    broker.start()
    return mark


def reconnected(d: Daemon, mark: int, timeout_s: float = 15.0) -> bool:
    """Wait until edged is connected again; whether the broker still had its session."""
    wait_until(lambda: events(d, "mqtt_connected", mark), timeout_s, "edged to reconnect", d.logs)
    line = events(d, "mqtt_connected", mark)[0]
    assert "session_present=" in line, line
    return "session_present=True" in line


def check_answer(client: SessionClient, rid: str, pieces: list[str]) -> None:
    """Exactly one final reply, a result with the whole answer; the chunks that arrived fit
    it. Chunks may be lost or repeated around the outage, and their boundaries are edged's
    (the guardian's output filter holds text back), so: a repeated seq is an exact copy,
    the chunks from seq 0 on without a gap join to a prefix of the answer, and every chunk
    is a piece of it."""
    answer = "".join(pieces)
    finals = client.finals(rid)
    assert len(finals) == 1, finals  # never two final replies
    assert finals[0]["type"] == "result", finals[0]
    assert finals[0]["text"] == answer
    assert finals[0]["finish_reason"] == "stop"
    by_seq: dict[int, str] = {}
    for ch in client.chunks(rid):
        assert by_seq.setdefault(ch["seq"], ch["text"]) == ch["text"], ch
        assert ch["text"] in answer, ch
    prefix, seq = "", 0
    while seq in by_seq:
        prefix += by_seq[seq]
        seq += 1
    assert answer.startswith(prefix), (prefix, by_seq)


def served(client: SessionClient, d: Daemon, timeout_s: float = 15.0) -> dict[str, int]:
    """The daemon's ingress counters once nothing is in flight: telemetry composed after
    now (so after every final reply seen so far) with ``in_flight`` 0."""
    now = time.time()

    def idle() -> bool:
        return any(t["llm"]["in_flight"] == 0 for t in client.telemetry(now))

    client.wait_for(idle, timeout_s, "telemetry with nothing in flight", d.logs)
    last = [t for t in client.telemetry(now) if t["llm"]["in_flight"] == 0][-1]
    return dict(last["ingress"])


def serves_another(client: SessionClient, d: Daemon, rid: str) -> None:
    client.request(d.device_id, rid, ["still ", "here"])
    client.wait_for(lambda: client.finals(rid), 15, f"the final reply to {rid}", d.logs)
    check_answer(client, rid, ["still ", "here"])


# --- the tests -----------------------------------------------------------------------------


def test_broker_restarted_gracefully_mid_stream(tmp_path: Path) -> None:
    """SIGTERM: Mosquitto saves its state and both sessions survive. The chunks published
    while it was down are resent by edged's paho; the request, acknowledged once journalled,
    is not delivered again."""
    with rig(tmp_path) as (broker, d, client):
        rid = "term-1"
        client.request(d.device_id, rid, PIECES)
        client.wait_for(lambda: len(client.chunks(rid)) >= 3, 10, "streaming", d.logs)
        mark = outage(broker, d, signal.SIGTERM)
        assert not answered_on_device(d, rid)  # the restart is mid-stream
        assert reconnected(d, mark)  # session_present=True: the session was resumed
        client.wait_subscribed(2)
        client.wait_for(lambda: client.finals(rid), 20, "the final reply", d.logs)
        assert redeliveries_ignored(d, rid) == 0, d.logs()
        serves_another(client, d, "term-2")
        counts = served(client, d)
        check_answer(client, rid, PIECES)
        assert counts["admitted"] == 2 and counts["duplicates"] == 0, counts
        assert client.session_present[1:] == [True]  # the client's session was kept too


def test_final_reply_made_while_the_broker_is_down_arrives_once(tmp_path: Path) -> None:
    """The answer finishes during the outage: its final reply waits in edged's paho and
    goes out after the reconnect; the request, acknowledged once journalled, is not
    delivered again."""
    with rig(tmp_path) as (broker, d, client):
        rid = "down-1"
        pieces = PIECES[:10]  # 2 s
        client.request(d.device_id, rid, pieces)
        client.wait_for(lambda: len(client.chunks(rid)) >= 2, 10, "streaming", d.logs)
        mark = outage(broker, d, signal.SIGTERM, while_down=lambda: answered_on_device(d, rid))
        assert not client.finals(rid)
        assert reconnected(d, mark)
        client.wait_for(lambda: client.finals(rid), 20, "the final reply", d.logs)
        serves_another(client, d, "down-2")
        counts = served(client, d)
        check_answer(client, rid, pieces)
        assert redeliveries_ignored(d, rid) == 0, d.logs()
        assert counts["admitted"] == 2 and counts["duplicates"] == 0, counts


@pytest.mark.parametrize("state", ["saved", "lost"])
def test_broker_killed_mid_stream(tmp_path: Path, state: str) -> None:
    """SIGKILL. ``saved``: the broker wrote its state (SIGUSR1) while the request streamed,
    so edged's session comes back, without the request (acknowledged once journalled, it
    is not in the file): nothing is delivered again. ``lost``: nothing was written, the
    broker comes back empty; edged starts a new session and subscribes again. Either way
    one final reply, one serving, and the daemon goes on serving."""
    with rig(tmp_path) as (broker, d, client):
        rid = f"kill-{state}"
        client.request(d.device_id, rid, PIECES)
        client.wait_for(lambda: len(client.chunks(rid)) >= 3, 10, "streaming", d.logs)
        session = f"edged-{d.device_id}"
        mark = outage(broker, d, signal.SIGKILL, save_first=session if state == "saved" else None)
        assert not request_saved(broker, rid)  # acknowledged: the broker no longer holds it
        assert not answered_on_device(d, rid)
        session_present = reconnected(d, mark)
        assert session_present is (state == "saved")
        client.wait_subscribed(2)
        # the client is back before the answer ends, so the final reply has a subscriber
        assert not answered_on_device(d, rid)
        client.wait_for(lambda: client.finals(rid), 20, "the final reply", d.logs)
        serves_another(client, d, f"{rid}-after")
        counts = served(client, d)
        assert d.proc is not None and d.proc.poll() is None
        check_answer(client, rid, PIECES)
        assert redeliveries_ignored(d, rid) == 0, d.logs()
        assert counts["admitted"] == 2, counts  # served once, and the request after it
        assert counts["duplicates"] == 0, counts


def test_broker_killed_with_three_requests_in_flight(tmp_path: Path) -> None:
    """Three requests streaming when the broker, which had saved its state, is killed: none
    is delivered again (each was acknowledged once journalled); each gets one final reply
    with its whole text."""
    with rig(tmp_path) as (broker, d, client):
        rids = [f"many-{i}" for i in range(3)]
        answers = {rid: [f"{rid}/{p}" for p in PIECES[: 20 + 3 * i]] for i, rid in enumerate(rids)}
        for rid in rids:
            client.request(d.device_id, rid, answers[rid])
        client.wait_for(
            lambda: all(len(client.chunks(r)) >= 2 for r in rids), 10, "all three streaming", d.logs
        )
        mark = outage(broker, d, signal.SIGKILL, save_first=f"edged-{d.device_id}")
        assert not any(request_saved(broker, r) for r in rids)
        assert reconnected(d, mark)
        client.wait_subscribed(2)
        client.wait_for(
            lambda: all(client.finals(r) for r in rids), 20, "three final replies", d.logs
        )
        serves_another(client, d, "many-after")
        counts = served(client, d)
        for rid in rids:
            check_answer(client, rid, answers[rid])
            assert redeliveries_ignored(d, rid) == 0, d.logs()
        assert counts["admitted"] == 4 and counts["duplicates"] == 0, counts
        finals = Counter(b["id"] for b in client.messages if b.get("type") in ("result", "error"))
        assert finals == Counter({**{r: 1 for r in rids}, "many-after": 1})


def test_request_of_the_new_session_is_acknowledged_once_by_itself_and_served_once(
    tmp_path: Path,
) -> None:
    """After a SIGKILL that lost the broker's state, edged starts a new session while the
    request of the old one (r1) still streams. The broker numbers the new session's
    messages from 1 again, so the next request (r2) gets the packet id r1 had. r1 ending
    must not acknowledge r2 (nor anything else): r1 was acknowledged once journalled, before
    the outage, and is never acknowledged again; r2 is acknowledged once, when journalled.
    When edged dies while serving r2, the journal has r2, and the restarted edged serves it.

    (Fails with the MqttLink of issue 7's time: ``acks.reset()`` on a new session does not
    retire the ``acks.done(mid)`` callbacks that requests of the old session still hold, so
    r1's completion sends a PUBACK with r2's packet id.)"""
    with rig(tmp_path) as (broker, d, client):
        client.request(d.device_id, "r1", PIECES)
        client.wait_for(lambda: len(client.chunks("r1")) >= 3, 10, "r1 streaming", d.logs)
        mark = outage(broker, d, signal.SIGKILL)
        assert not reconnected(d, mark)  # a new session
        client.wait_subscribed(2)
        client.request(d.device_id, "r2", PIECES)
        client.wait_for(lambda: client.finals("r1"), 20, "r1's final reply", d.logs)
        seen = len(client.chunks("r2"))
        client.wait_for(lambda: len(client.chunks("r2")) > seen, 10, "r2 streaming on", d.logs)
        broker_log = (broker.state_dir / "mosquitto.log").read_text(errors="replace")
        d.stop(signal.SIGKILL)
        assert not answered_on_device(d, "r2")  # edged died while serving r2
        to_edged = f"Sending PUBLISH to edged-{d.device_id} "
        mids = [
            line.split(", ")[3]
            for line in broker_log.splitlines()
            if to_edged in line and f"'edged/{d.device_id}/request'" in line
        ]
        assert mids == ["m1", "m1"], mids  # r1 and r2 were sent to edged with one packet id
        _, _, after_r2 = broker_log.rpartition(to_edged)
        early_acks = [
            line
            for line in after_r2.splitlines()
            if f"Received PUBACK from edged-{d.device_id} (Mid: 1," in line
        ]
        d.start()
        client.poll(lambda: client.finals("r2"), 20)  # r2 served again, from the journal
        finals = client.finals("r2")
        assert [f["type"] for f in finals] == ["result"], (
            f"r2 never got a final reply (broker log after r2 was sent: {early_acks})\n"
            f"{d.logs()[-4000:]}"
        )
        assert finals[0]["text"] == ANSWER
        assert len(early_acks) == 1, early_acks  # r2's own, once journalled; none from r1
        assert len(events(d, "journal_replayed")) == 1, d.logs()
