"""Ingress: takes request messages off the MQTT link, validates, admits, and serves them.

Runs entirely on the event loop thread (the link calls :meth:`Ingress.on_message` from its
read callback). A request's QoS 1 PUBACK is sent only once its final reply has been
published, so a request that was in flight when edged died is redelivered by the broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from edged.config import Config
from edged.errors import BadRequest, Busy, EdgedError, ShuttingDown
from edged.ingress import wire
from edged.ingress.responder import Publisher, Responder
from edged.mqtt.link import Incoming
from edged.mqtt.topics import Topics
from edged.store import RecordLog
from edged.types import ReplyAddress, Request

log = logging.getLogger("edged.ingress")

Handler = Callable[[Request, Responder], Awaitable[None]]
AckFactory = Callable[[Incoming], Callable[[], None]]


class Ingress:
    """Validation, admission (bounded), de-duplication and per-request tasks."""

    def __init__(
        self,
        cfg: Config,
        topics: Topics,
        publisher: Publisher,
        ack: AckFactory,
        handler: Handler,
        *,
        answered_file: Path | None = None,
    ) -> None:
        self._cfg = cfg
        self._topics = topics
        self._pub = publisher
        self._ack = ack
        self._handler = handler
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.closing = False
        self.counts: dict[str, int] = {"received": 0, "admitted": 0, "rejected": 0, "duplicates": 0}
        # Ids answered recently, kept on disk: a request whose final reply went out just
        # before a crash, but whose PUBACK did not, is redelivered and must not be served
        # twice. Loaded once here (before serving); appended off the event loop.
        self._answered_file = answered_file
        if answered_file is not None:
            for rid in _read_answered(answered_file, cfg.ingress.dedupe_window):
                self._remember(rid)

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished."""
        return len(self._tasks)

    def reconfigure(self, cfg: Config) -> None:
        """Use new limits for requests that arrive from now on."""
        self._cfg = cfg

    def _remember(self, request_id: str) -> None:
        self._recent[request_id] = None
        self._recent.move_to_end(request_id)
        while len(self._recent) > self._cfg.ingress.dedupe_window:
            self._recent.popitem(last=False)

    def on_message(self, msg: Incoming) -> None:
        """Handle one incoming PUBLISH (event loop thread; must not block)."""
        if msg.topic != self._topics.request:
            self._ack(msg)()
            return
        if self.closing:
            # Not acknowledged: the broker keeps it in our session and redelivers it when
            # edged is back.
            log.info("event=request_deferred reason=shutting_down mid=%d", msg.mid)
            return
        done = self._ack(msg)
        if msg.retain:
            # Only a retained message the broker hands over at subscription time arrives with
            # the retain flag (MQTT v5, Retain As Published off): a stale copy that would be
            # served again at every reconnect. What was published live was served then.
            log.warning("event=retained_request_ignored mid=%d bytes=%d", msg.mid,
                        len(msg.payload))  # fmt: skip
            done()
            return
        self.counts["received"] += 1
        parsed = wire.parse_request(
            msg.payload,
            cfg=self._cfg,
            default_reply_topic=self._topics.response,
            response_topic=msg.response_topic,
            correlation_data=msg.correlation_data,
            received_at_s=msg.received_at_s,
            expiry_s=msg.expiry_s,
        )
        if isinstance(parsed, wire.Rejection):
            self.counts["rejected"] += 1
            self._reject(parsed.id, parsed.reply, parsed.error)
            done()
            return
        req = parsed
        if req.id in self._recent or req.id in self._tasks:
            self.counts["duplicates"] += 1
            if msg.dup:
                log.info("event=redelivery_ignored id=%s", req.id)
            else:
                self._reject(
                    None,  # id null: not to be mistaken for the first request's reply
                    req.reply,
                    BadRequest(f"id {req.id!r} was used by a recent request; ids must be unique"),
                )
            done()
            return
        if len(self._tasks) >= self._cfg.ingress.queue_limit:
            self.counts["rejected"] += 1
            self._reject(
                req.id,
                req.reply,
                Busy(
                    f"{len(self._tasks)} requests are in progress; the limit is "
                    f"{self._cfg.ingress.queue_limit}"
                ),
            )
            done()
            return
        self._remember(req.id)
        self.counts["admitted"] += 1
        responder = Responder(self._pub, req.id, req.reply, self._cfg.mqtt.reply_qos)
        task = asyncio.create_task(self._serve(req, responder, done), name=f"request-{req.id}")
        self._tasks[req.id] = task

    def _reject(self, request_id: str | None, reply: ReplyAddress | None, err: EdgedError) -> None:
        log.info(
            "event=request_rejected id=%s code=%s reason=%r", request_id, err.code, err.message
        )
        if reply is None:
            log.warning("event=reply_dropped id=%s reason=no_safe_reply_address", request_id)
            return
        Responder(self._pub, request_id, reply, self._cfg.mqtt.reply_qos).error(err)

    async def _serve(self, req: Request, responder: Responder, done: Callable[[], None]) -> None:
        try:
            await self._handler(req, responder)
        except asyncio.CancelledError:
            responder.error(ShuttingDown("edged is shutting down"))
            raise
        finally:
            self._tasks.pop(req.id, None)
            if self._answered_file is not None and responder.final is not None:
                asyncio.get_running_loop().run_in_executor(
                    None, _append_answered, self._answered_file, req.id,
                    self._cfg.ingress.dedupe_window,
                )  # fmt: skip
            if responder.final is None:  # a handler bug; the rule is one final reply
                log.error("event=no_final_reply id=%s", req.id)
            done()

    async def drain(self, grace_s: float) -> None:
        """Stop admitting; wait up to ``grace_s`` for requests in flight, then end them."""
        self.closing = True
        tasks = list(self._tasks.values())
        if not tasks:
            return
        log.info("event=draining in_flight=%d grace_s=%.1f", len(tasks), grace_s)
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)


def _answered_log(path: Path, keep: int) -> RecordLog:
    """The one RecordLog for ``path`` in this process (so appends from executor threads are
    serialised by its lock), keeping ``keep`` ids (at least 1, whatever the settings)."""
    key = os.path.abspath(path)
    with _answered_logs_lock:
        store = _answered_logs.get(key)
        if store is None:
            store = _answered_logs[key] = RecordLog(path, keep, legacy=_legacy_answered_id)
    if store.keep != max(1, keep):
        store.keep = keep
    return store


def _legacy_answered_id(line: bytes) -> tuple[bool, str | None]:
    """A line of the plain format before checksums: one id, nothing else."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return False, None
    return (True, text) if wire.ID_RE.fullmatch(text) else (False, None)


def _read_answered(path: Path, keep: int) -> list[str]:
    """The newest ``keep`` answered ids (oldest first). Damage (invalid UTF-8, a NUL-filled
    tail, an id cut in half, garbage) is skipped, counted and logged, and the file rewritten
    clean; never raises. Reads the old plain-line format too."""
    ids = [v for v in _answered_log(path, keep).load() if isinstance(v, str)]
    return ids[-keep:] if keep else []


def _append_answered(path: Path, request_id: str, keep: int) -> None:
    """Append one id (fsynced, serialised with every other append to ``path``); the file is
    compacted to the newest ``keep`` ids (at least 1) at twice that. Logs, never raises."""
    try:
        _answered_log(path, keep).append(request_id)
    except OSError as e:
        log.warning("event=answered_ids_write_failed error=%r", str(e))


_answered_logs: dict[str, RecordLog] = {}
_answered_logs_lock = threading.Lock()
