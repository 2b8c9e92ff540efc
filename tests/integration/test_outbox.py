"""Store-and-forward against a real Mosquitto and the real MqttLink: a broker outage loses
nothing and reorders nothing; spooled telemetry survives a restart of the process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.mqtt.link import MqttLink
from edged.telemetry.outbox import Outbox
from edged.telemetry.spool import Spool
from tests.helpers import Broker, Client, Msg

pytestmark = pytest.mark.integration

TOPIC = "tele/dev1/telemetry"


class SessionClient(Client):
    """The test subscriber, with a persistent session: its subscription outlives the broker
    restart (Mosquitto persists it) and what arrives meanwhile is queued for it."""

    def __enter__(self) -> SessionClient:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self._c.reconnect_delay_set(min_delay=0.1, max_delay=0.2)
        self._c.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self._c.loop_start()
        return self


async def wait_for(cond: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


async def receive(sub: Client, n: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The next ``n`` messages on TOPIC, as JSON."""
    out: list[dict[str, Any]] = []
    end = time.monotonic() + timeout_s
    while len(out) < n:
        try:
            msg: Msg = sub.inbox.get_nowait()
        except queue.Empty:
            if time.monotonic() > end:
                raise AssertionError(f"got {len(out)} of {n} messages: {out[-3:]}") from None
            await asyncio.sleep(0.01)
            continue
        if msg.topic == TOPIC:
            out.append(msg.json())
    return out


async def nothing_more(sub: Client, quiet_s: float = 0.5) -> None:
    await asyncio.sleep(quiet_s)
    extra = []
    while not sub.inbox.empty():
        extra.append(sub.inbox.get_nowait().json())
    assert extra == [], f"unexpected extra messages (duplicates?): {extra[:5]}"


def idle(outbox: Outbox) -> bool:
    """Connected, drained, and sending live again."""
    return outbox.link.connected.is_set() and outbox.spool.pending == 0 and not outbox.draining


def make_link(port: int, client_id: str) -> MqttLink:
    return MqttLink(
        host="127.0.0.1",
        port=port,
        client_id=client_id,
        subscriptions=(),
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )


@contextlib.asynccontextmanager
async def running(link: MqttLink, outbox: Outbox) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(link.run(), name="link"),
        asyncio.create_task(outbox.run(), name="outbox"),
    ]
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await link.close(timeout_s=1.0)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def outage(broker: Broker, link: MqttLink) -> None:
    # let the subscriber's PUBACKs for what it received reach the broker first, or the
    # broker redelivers those to it after the restart (its at-least-once, not ours)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(broker.stop)
    await wait_for(lambda: not link.connected.is_set(), what="the link to notice the outage")


def assert_in_order_without_loss(got: list[dict[str, Any]], expected: int) -> None:
    assert [m["n"] for m in got] == list(range(expected)), "lost, duplicated or reordered"


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    b = Broker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


def test_outage_spools_then_replays_in_order_then_goes_live(broker: Broker, tmp_path: Path) -> None:
    n_live, n_outage, n_during, n_after = 20, 400, 150, 20

    async def main() -> None:
        with SessionClient(broker.port) as sub:
            sub.subscribe(TOPIC)
            link = make_link(broker.port, f"outbox-{uuid.uuid4().hex[:8]}")
            spool = Spool(tmp_path / "spool", 1 << 20)
            outbox = Outbox(link, spool)
            async with running(link, outbox):
                await link.wait_connected(10)
                n = 0
                # 1. connected: straight out, live
                for _ in range(n_live):
                    await outbox.send(TOPIC, {"n": n})
                    n += 1
                live = await receive(sub, n_live)
                assert_in_order_without_loss(live, n_live)
                assert not any(m.get("historical") for m in live)
                assert spool.pending == 0

                # 2. the broker goes away: everything is spooled, paho is not handed any
                await outage(broker, link)
                for _ in range(n_outage):
                    await outbox.send(TOPIC, {"n": n})
                    n += 1
                assert spool.pending == n_outage
                assert outbox.sent_live == n_live

                # 3. it comes back while we keep sending: the spool drains first, in
                # order; what is sent meanwhile queues behind it
                await asyncio.to_thread(broker.start)
                for _ in range(n_during):
                    await outbox.send(TOPIC, {"n": n})
                    n += 1
                    await asyncio.sleep(0.002)
                await wait_for(lambda: idle(outbox), what="the drain")
                # 4. and then live again
                for _ in range(n_after):
                    await outbox.send(TOPIC, {"n": n})
                    n += 1
                rest = await receive(sub, n - n_live)
                await nothing_more(sub)

                got = live + rest
                assert_in_order_without_loss(got, n)
                flags = [bool(m.get("historical")) for m in rest]
                # every message sent during the outage went through the spool ...
                assert all(flags[:n_outage])
                # ... and once one went out live, none after it is historical
                first_live = flags.index(False)
                assert first_live >= n_outage
                assert not any(flags[first_live:])
                assert not any(flags[-n_after:])
                seqs = [m["spool_seq"] for m in rest if m.get("historical")]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
                assert spool.dropped == 0
                assert spool.pending == 0
                assert list((tmp_path / "spool").glob("seg-*.jsonl")) == []

    asyncio.run(main())


def test_spooled_records_survive_a_restart_before_the_broker_returns(
    broker: Broker, tmp_path: Path
) -> None:
    n_live, n_outage, n_after = 10, 250, 10
    spool_dir = tmp_path / "spool"
    client_id = f"outbox-{uuid.uuid4().hex[:8]}"

    async def first_life(sub: Client) -> int:
        link = make_link(broker.port, client_id)
        spool = Spool(spool_dir, 1 << 20)
        outbox = Outbox(link, spool)
        async with running(link, outbox):
            await link.wait_connected(10)
            for n in range(n_live):
                await outbox.send(TOPIC, {"n": n})
            live = await receive(sub, n_live)
            assert not any(m.get("historical") for m in live)
            await outage(broker, link)
            for n in range(n_live, n_live + n_outage):
                await outbox.send(TOPIC, {"n": n})
            assert spool.pending == n_outage
        # the process ends here without closing the spool (as if killed)
        return n_live + n_outage

    async def second_life(sub: Client, n: int) -> None:
        link = make_link(broker.port, client_id)
        spool = Spool(spool_dir, 1 << 20)
        await spool.open()
        assert spool.pending == n_outage  # recovered from the files
        outbox = Outbox(link, spool)
        await asyncio.to_thread(broker.start)
        async with running(link, outbox):
            await link.wait_connected(10)
            await wait_for(lambda: idle(outbox), what="the drain")
            for i in range(n, n + n_after):
                await outbox.send(TOPIC, {"n": i})
            got = await receive(sub, n_outage + n_after)
            await nothing_more(sub)
        assert [m["n"] for m in got] == list(range(n_live, n + n_after))
        assert all(m.get("historical") for m in got[:n_outage])
        assert not any(m.get("historical") for m in got[n_outage:])
        assert [m["spool_seq"] for m in got[:n_outage]] == list(range(1, n_outage + 1))
        # a third life finds nothing to send again
        again = Spool(spool_dir, 1 << 20)
        await again.open()
        assert again.pending == 0
        assert again.last_seq == n_outage

    with SessionClient(broker.port) as sub:
        sub.subscribe(TOPIC)
        n = asyncio.run(first_life(sub))
        asyncio.run(second_life(sub, n))


def test_link_lost_mid_replay_resumes_without_loss(broker: Broker, tmp_path: Path) -> None:
    """The broker dies again while the spool drains: the drain stops, and resumes after
    the next reconnect; nothing is lost and the first arrival of each message is in order
    (messages in flight when the link dropped may arrive twice: at-least-once)."""
    n_outage = 3000

    async def main() -> None:
        with SessionClient(broker.port) as sub:
            sub.subscribe(TOPIC)
            link = make_link(broker.port, f"outbox-{uuid.uuid4().hex[:8]}")
            spool = Spool(tmp_path / "spool", 1 << 22)
            # slow the drain so that the second outage lands in the middle of it
            outbox = Outbox(link, spool, max_per_s=2000, commit_every=100)
            async with running(link, outbox):
                await link.wait_connected(10)
                await outage(broker, link)
                for n in range(n_outage):
                    await outbox.send(TOPIC, {"n": n})
                await asyncio.to_thread(broker.start)
                await wait_for(lambda: outbox.sent_historical >= 400, what="the drain to start")
                await outage(broker, link)
                assert 0 < spool.pending < n_outage  # part committed, part not
                await asyncio.to_thread(broker.start)
                await wait_for(lambda: idle(outbox), timeout_s=30, what="the drain")
                await outbox.send(TOPIC, {"n": n_outage})
                got: list[dict[str, Any]] = []
                seen: set[int] = set()
                end = time.monotonic() + 30
                while len(seen) < n_outage + 1 and time.monotonic() < end:
                    for m in await receive(sub, 1):
                        got.append(m)
                        seen.add(m["n"])
        firsts: list[int] = []  # each message's first arrival, in arrival order
        for m in got:
            if m["n"] not in firsts:
                firsts.append(m["n"])
        assert seen == set(range(n_outage + 1)), "lost"
        assert firsts == list(range(n_outage + 1)), "reordered"
        # a duplicate is an exact copy (same spool_seq), so a receiver can drop it
        by_n: dict[int, set[int]] = {}
        for m in got:
            if m.get("historical"):
                by_n.setdefault(m["n"], set()).add(m["spool_seq"])
        assert all(len(v) == 1 for v in by_n.values())
        assert not got[-1].get("historical")

    asyncio.run(main())


class FakeLink:
    """A publisher without a broker: records what it is handed."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, json.loads(payload)))


def test_a_full_disk_never_stops_sending(tmp_path: Path) -> None:
    """The spool refuses every write: connected, messages still go out (live); disconnected,
    they are counted as lost; nothing raises."""
    blocker = tmp_path / "file"
    blocker.write_text("")  # the spool directory cannot be created under a file

    async def main() -> None:
        link = FakeLink()
        spool = Spool(blocker / "spool", 1 << 20)
        outbox = Outbox(link, spool)
        await outbox.send(TOPIC, {"n": 0})  # disconnected: spool refuses: lost
        link.connected.set()
        await outbox.send(TOPIC, {"n": 1})  # connected and nothing spooled: live
        assert outbox.lost == 1
        assert spool.failed_writes == 1
        assert link.sent == [(TOPIC, {"n": 1})]

    asyncio.run(main())


def test_connected_with_a_backlog_and_a_full_disk_publishes_rather_than_loses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        link = FakeLink()
        spool = Spool(tmp_path / "spool", 1 << 20)
        outbox = Outbox(link, spool)
        await outbox.send(TOPIC, {"n": 0})  # disconnected: spooled
        assert spool.pending == 1

        async def refuse(record: Any) -> bool:
            return False

        monkeypatch.setattr(spool, "append", refuse)
        link.connected.set()
        await outbox.send(TOPIC, {"n": 1})  # backlog, but the disk is full: out of order
        assert link.sent == [(TOPIC, {"n": 1})]
        assert outbox.lost == 0
        monkeypatch.undo()
        task = asyncio.create_task(outbox.run())
        await wait_for(lambda: idle(outbox), what="the drain")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert link.sent[1] == (TOPIC, {"n": 0, "historical": True, "spool_seq": 1})

    asyncio.run(main())
