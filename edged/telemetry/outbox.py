"""Store-and-forward publishing: telemetry goes out now when it can, later when it cannot.

:meth:`Outbox.send` publishes at once while the link is up and nothing waits in the spool;
otherwise the message goes to the :class:`~edged.telemetry.spool.Spool`. :meth:`Outbox.run`
(a task for the daemon's life) drains the spool whenever the link is up: in order, each
message with ``"historical": true`` and ``"spool_seq"`` (for de-duplication) added, with at
most ``window`` PUBLISHes awaiting their PUBACK and at most ``max_per_s`` a second.
Messages sent while a drain runs join the spool behind it, so the receiver sees everything
in the order it was sent. The spool forgets a message only once the broker acknowledged it
(QoS 1); a connection lost mid-drain stops the drain and the next one starts again from
the first unacknowledged message (at-least-once).

paho queues a QoS 1 PUBLISH made while disconnected and sends it on reconnect, ahead of
anything else; that is why a live publish is made only while ``link.connected`` is set, and
the spool is used otherwise.

The outbox invents no topics: the caller reads ``spool.dropped`` (records the bound threw
away) and ``spool.failed_writes`` into its own telemetry and alarms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from edged.telemetry.spool import Spool

log = logging.getLogger("edged.telemetry")


class Publisher(Protocol):
    """The part of :class:`edged.mqtt.link.MqttLink` the outbox uses."""

    @property
    def connected(self) -> asyncio.Event: ...

    def publish(self, topic: str, payload: bytes, *, qos: int = ..., retain: bool = ...) -> Any:
        """Queue a PUBLISH; what it returns may have paho's ``is_published()``."""
        ...


def encode(record: Mapping[str, Any]) -> bytes:
    """Compact JSON, UTF-8."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _published(info: Any) -> bool | None:
    """True once acknowledged (QoS 1) or written (QoS 0); None if paho gave up on it."""
    is_published = getattr(info, "is_published", None)
    if is_published is None:
        return True  # a publisher that does not report delivery: take it as sent
    try:
        return bool(is_published())
    except (RuntimeError, ValueError):
        return None


class Outbox:
    """Publish now while connected, spool while not, drain the spool in order on reconnect."""

    def __init__(
        self,
        link: Publisher,
        spool: Spool,
        *,
        qos: int = 1,
        window: int = 100,
        max_per_s: float = 5000.0,
        commit_every: int = 500,
    ) -> None:
        self.link = link
        self.spool = spool
        self.qos = qos
        self.window = max(1, window)
        self.max_per_s = max_per_s
        self.commit_every = max(1, commit_every)
        self.sent_live = 0
        self.sent_historical = 0
        self.spooled = 0
        self.lost = 0  # neither published nor stored (spool failing while disconnected)
        self._lock = asyncio.Lock()  # send's decision and its append are one step
        self._drain_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._draining = False

    @property
    def dropped(self) -> int:
        """``spool.dropped``: put it in telemetry as ``spool_dropped``."""
        return self.spool.dropped

    @property
    def draining(self) -> bool:
        """A drain of the spool is in progress (what is sent now is spooled behind it)."""
        return self._draining

    def _live(self) -> bool:
        return self.link.connected.is_set() and not self._draining and self.spool.pending == 0

    async def wait_live(self, timeout_s: float) -> bool:
        """Wait until :meth:`send` would publish at once (the link connected, nothing in the
        spool, no drain running), at most ``timeout_s``; True when it would. For the first
        record after a start, which would otherwise often be composed while a backlog left
        from before drains, and be queued behind it as historical."""
        await self.spool.open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._live():  # the drain's end has no event; poll (once, at start)
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def send(self, topic: str, record: Mapping[str, Any]) -> None:
        """Publish ``record`` on ``topic`` now, or spool it behind what waits already.

        Never raises for the disk or the link. When the spool refuses the message (disk
        full: ``spool.failed_writes``) and the link is up, it is published at once, out of
        order, rather than lost; with the link down too it is lost and counted in ``lost``.
        """
        await self.spool.open()
        async with self._lock:
            if self._live():
                self.link.publish(topic, encode(record), qos=self.qos)
                self.sent_live += 1
                return
            if await self.spool.append({"topic": topic, "record": dict(record)}):
                self.spooled += 1
                self._wake.set()
            elif self.link.connected.is_set():
                self.link.publish(topic, encode(record), qos=self.qos)
                self.sent_live += 1
            else:
                self.lost += 1

    async def run(self) -> None:
        """Drain the spool whenever the link is up and something waits; until cancelled."""
        await self.spool.open()
        while True:
            await self.link.connected.wait()
            if self.spool.pending == 0:
                # While connected and idle nothing is spooled (send publishes live), so the
                # only wake-up needed is a spooled message; if the link dropped meanwhile,
                # the loop then waits for it above.
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                caught_up = await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                # a bug or a corrupt record must not end telemetry: wait, try again
                log.exception("event=outbox_drain_failed")
                caught_up = False
            if not caught_up and self.link.connected.is_set():
                await asyncio.sleep(1.0)  # paho refused while "connected": do not spin

    async def flush(self) -> bool:
        """At shutdown: publish what waits in the spool if the link is up. True when
        nothing waits any more; what could not be sent stays on disk for the next start."""
        await self.spool.open()
        if self.spool.pending == 0:
            return True
        if not self.link.connected.is_set() or self._draining:
            return False
        return await self._drain()

    async def _drain(self) -> bool:
        """Publish the spool in order until it is empty (True) or the link drops (False).
        One at a time (run() and flush() may both ask)."""
        async with self._drain_lock:
            return await self._drain_locked()

    async def _drain_locked(self) -> bool:
        self._draining = True
        try:
            while await self._drain_once():
                async with self._lock:
                    # every append that had started is finished here; nothing new: go live
                    if self.spool.pending == 0:
                        log.info(
                            "event=spool_drained sent_historical=%d dropped=%d",
                            self.sent_historical,
                            self.spool.dropped,
                        )
                        self._draining = False
                        return True
            return False
        finally:
            self._draining = False

    def _publish_entry(self, entry: Mapping[str, Any]) -> Any:
        """Publish one spooled message; None when it cannot be sent at all (skipped)."""
        seq = int(entry["seq"])
        topic = entry.get("topic")
        body = entry.get("record")
        if not isinstance(topic, str) or not isinstance(body, dict):
            log.error("event=spool_entry_invalid seq=%d", seq)
            return None
        try:
            payload = encode({**body, "historical": True, "spool_seq": seq})
            info = self.link.publish(topic, payload, qos=self.qos)
        except (ValueError, TypeError) as e:  # a topic or payload paho rejects outright
            log.error("event=spool_entry_unpublishable seq=%d error=%r", seq, str(e))
            return None
        self.sent_historical += 1
        return info

    async def _drain_once(self) -> bool:
        """One pass over the spool. True when it caught up, with every message acknowledged
        and committed; False when the link dropped (or paho gave a message up) first."""
        connected = self.link.connected
        outstanding: deque[tuple[int, Any]] = deque()  # (seq, delivery), oldest first
        acked = committed = self.spool.acked_seq  # acked: every seq up to it is acknowledged
        started = time.monotonic()
        n = 0
        failed = False

        def reap() -> bool:
            """Move ``acked`` past the acknowledged head; False if paho gave one up."""
            nonlocal acked
            while outstanding:
                ok = _published(outstanding[0][1])
                if ok is None:
                    return False
                if not ok:
                    break
                acked = outstanding.popleft()[0]
            return True

        replay = self.spool.replay()
        async with contextlib.aclosing(replay):
            async for entry in replay:
                if not connected.is_set():
                    break
                outstanding.append((int(entry["seq"]), self._publish_entry(entry)))
                n += 1
                # flow control: at most `window` awaiting their PUBACK
                while not (failed := not reap()) and connected.is_set():
                    if len(outstanding) < self.window:
                        break
                    await asyncio.sleep(0.001)
                if failed:
                    break
                # and at most max_per_s a second
                if self.max_per_s > 0:
                    ahead = n / self.max_per_s - (time.monotonic() - started)
                    if ahead > 0.005:
                        await asyncio.sleep(ahead)
                    elif n % 256 == 0:
                        await asyncio.sleep(0)
                if acked - committed >= self.commit_every:
                    await self.spool.commit(acked)
                    committed = acked
        # the tail's PUBACKs (paho offers no awaitable for them, so poll, as link.flush does)
        while outstanding and connected.is_set() and reap():  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        if acked > committed:
            await self.spool.commit(acked)
        if outstanding or not connected.is_set():
            log.info(
                "event=spool_drain_interrupted unacked=%d pending=%d",
                len(outstanding),
                self.spool.pending,
            )
            return False
        return True
