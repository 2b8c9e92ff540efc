"""Ingress: takes request messages off the MQTT link, validates, admits, and serves them.

Runs entirely on the event loop thread (the link calls :meth:`Ingress.on_message` from its
read callback). With an in-flight journal (the daemon has one), a QoS 1 request is
acknowledged to the broker as soon as it is refused, or admitted and recorded in the journal,
so the broker's flow control never waits on how long a request takes; a request in flight
when edged died is found in the journal at the next start and served once (:meth:`resume`).
Without a journal, or when the journal cannot be written, its PUBACK is sent once its final
reply has been published, and the broker redelivers it instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from edged.aio import CancelScope, set_cancel_scope
from edged.config import Config
from edged.errors import BadRequest, Busy, EdgedError, ShuttingDown
from edged.ingress import journal as journal_mod
from edged.ingress import wire
from edged.ingress.journal import Entry, Journal
from edged.ingress.responder import FinalSink, Publisher, Responder
from edged.mqtt.link import Incoming
from edged.mqtt.topics import Topics
from edged.store import RecordLog
from edged.types import ReplyAddress, Request

log = logging.getLogger("edged.ingress")

Handler = Callable[[Request, FinalSink], Awaitable[None]]
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
        journal: Journal | None = None,
    ) -> None:
        self._cfg = cfg
        self._topics = topics
        self._pub = publisher
        self._ack = ack
        self._handler = handler
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._scopes: dict[str, CancelScope] = {}  # barge-in, per request in flight
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.closing = False
        self.counts: dict[str, int] = {
            **{"received": 0, "admitted": 0, "rejected": 0, "duplicates": 0},
            **{"cancelled": 0, "cancels_ignored": 0},
        }
        # Ids answered recently, kept on disk: a request whose final reply went out just
        # before a crash, but whose PUBACK did not, is redelivered and must not be served
        # twice. Loaded once here (before serving); appended off the event loop.
        self._answered_file = answered_file
        if answered_file is not None:
            for rid in _read_answered(answered_file, cfg.ingress.dedupe_window):
                self._remember(rid)
        # Requests journalled and not answered when edged stopped; served by resume(). Their
        # ids are remembered now, so that the broker's redelivery of one is not served too.
        self._journal = journal
        self._replay: list[Entry] = []
        self._replay_answered: list[str] = []
        if journal is not None:
            for entry in journal.load():
                if entry.id in self._recent:  # answered; its done record was not written
                    self._replay_answered.append(entry.id)
                else:
                    self._replay.append(entry)
                    self._remember(entry.id)

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished."""
        return len(self._tasks)

    def in_flight_tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of the requests admitted and not yet finished."""
        return list(self._tasks.values())

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
            if msg.topic == self._topics.cancel and not msg.retain:
                self._on_cancel(msg.payload)
            self._ack(msg)()
            return
        if self.closing:
            # Not acknowledged: the broker keeps it in our session and redelivers it when
            # edged is back.
            log.info("event=request_deferred reason=shutting_down mid=%d", msg.mid)
            return
        done = _once(self._ack(msg))
        if msg.retain:
            # Only a retained message the broker hands over at subscription time arrives with
            # the retain flag (MQTT v5, Retain As Published off): a stale copy that would be
            # served again at every reconnect. What was published live was served then.
            log.warning("event=retained_request_ignored mid=%d bytes=%d", msg.mid, len(msg.payload))
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
        journalled = self._journal is not None and msg.qos == 1
        if journalled:
            # acknowledged once on disk (serving starts now, without waiting for the fsync);
            # if the write fails, only after the final reply (the broker redelivers instead)
            assert self._journal is not None
            record = journal_mod.request_record(req, time.monotonic(), time.time())
            self._journal.admit_async(record).add_done_callback(
                functools.partial(self._journalled, request_id=req.id, ack=done)
            )
        self._start(req, done, journalled)

    def _on_cancel(self, payload: bytes) -> None:
        try:
            rid = wire.parse_cancel(payload)
        except ValueError as e:
            self.counts["cancels_ignored"] += 1
            log.warning("event=cancel_ignored reason=malformed detail=%r", str(e))
            return
        self.cancel(rid)

    def cancel(self, request_id: str) -> bool:
        """Stop request ``request_id`` (barge-in): it ends soon with its one final reply, a
        ``cancelled`` result. False (logged, nothing changes) when no such request is in
        flight here or it was cancelled already. For any ingress (MQTT cancel topic, HTTP
        client gone); event loop thread only."""
        scope = self._scopes.get(request_id)
        if scope is None or not scope.request():
            self.counts["cancels_ignored"] += 1
            why = "not_in_flight" if scope is None else "already_cancelled"
            log.info("event=cancel_ignored id=%s reason=%s", request_id, why)
            return False
        self.counts["cancelled"] += 1
        log.info("event=cancel_requested id=%s", request_id)
        return True

    def _start(self, req: Request, done: Callable[[], None], journalled: bool) -> None:
        responder = Responder(
            self._pub,
            req.id,
            req.reply,
            self._cfg.mqtt.reply_qos,
            flush_s=self._cfg.ingress.chunk_flush_ms / 1000,
        )
        scope = CancelScope()
        task = asyncio.create_task(
            self._serve(req, responder, done, journalled, scope=scope), name=f"request-{req.id}"
        )
        self._tasks[req.id] = task
        self._scopes[req.id] = scope

    def _journalled(
        self, fut: asyncio.Future[None], request_id: str, ack: Callable[[], None]
    ) -> None:
        err = None if fut.cancelled() else fut.exception()
        if err is None and not fut.cancelled():
            ack()
            return
        assert self._journal is not None
        self._journal.failed_writes += 1
        log.warning(
            "event=journal_write_failed op=admit id=%s error=%r ack=after_final_reply",
            request_id,
            str(err),
        )

    def resume(self) -> None:
        """Serve the requests the journal held at start (once; call on the event loop before
        the link delivers requests). One whose deadline passed meanwhile ends as ``timeout``;
        one older than ``mqtt.session_expiry_s`` (the broker would have dropped it by then)
        is dropped with a log line."""
        if self._journal is None:
            return
        for rid in self._replay_answered:
            log.info("event=journal_entry_already_answered id=%s", rid)
            self._journal.done_async(rid)
        now_unix_s = time.time()
        for entry in self._replay:
            age_s = now_unix_s - entry.received_unix_s
            if age_s > self._cfg.mqtt.session_expiry_s:
                log.warning("event=journal_entry_expired id=%s age_s=%.0f", entry.id, age_s)
                self._journal.done_async(entry.id)
                continue
            log.info("event=journal_replayed id=%s age_s=%.1f", entry.id, age_s)
            self.counts["admitted"] += 1
            self._start(entry.request(), lambda: None, True)
        self._replay, self._replay_answered = [], []

    def admit(self, req: Request, sink: FinalSink) -> asyncio.Task[None]:
        """Admit a request from another front door (HTTP) under the same queue limit and
        task bookkeeping as MQTT; raises ShuttingDown or Busy. Neither journalled nor kept
        in the answered ids (its client is one connection, gone if edged stops)."""
        if self.closing:
            raise ShuttingDown("edged is shutting down")
        self.counts["received"] += 1
        if len(self._tasks) >= self._cfg.ingress.queue_limit or req.id in self._tasks:
            self.counts["rejected"] += 1
            raise Busy(
                f"{len(self._tasks)} requests are in progress; the limit is "
                f"{self._cfg.ingress.queue_limit}"
            )
        self.counts["admitted"] += 1
        scope = CancelScope()  # a client that hangs up cancels it like barge-in does
        task = asyncio.create_task(
            self._serve(req, sink, lambda: None, scope=scope, answered=False),
            name=f"request-{req.id}",
        )
        self._tasks[req.id] = task
        self._scopes[req.id] = scope
        return task

    def _reject(self, request_id: str | None, reply: ReplyAddress | None, err: EdgedError) -> None:
        log.info(
            "event=request_rejected id=%s code=%s reason=%r", request_id, err.code, err.message
        )
        if reply is None:
            log.warning("event=reply_dropped id=%s reason=no_safe_reply_address", request_id)
            return
        Responder(self._pub, request_id, reply, self._cfg.mqtt.reply_qos).error(err)

    async def _serve(
        self,
        req: Request,
        responder: FinalSink,
        done: Callable[[], None],
        journalled: bool = False,
        *,
        scope: CancelScope | None = None,
        answered: bool = True,
    ) -> None:
        try:
            if scope is not None:
                set_cancel_scope(scope)  # this task's context only
            await self._handler(req, responder)
        except asyncio.CancelledError:
            responder.error(ShuttingDown("edged is shutting down"))
            raise
        finally:
            self._tasks.pop(req.id, None)
            self._scopes.pop(req.id, None)
            if answered and self._answered_file is not None and responder.final is not None:
                asyncio.get_running_loop().run_in_executor(
                    None,
                    _append_answered,
                    self._answered_file,
                    req.id,
                    self._cfg.ingress.dedupe_window,
                )
            if responder.final is None:  # a handler bug; the rule is one final reply
                log.error("event=no_final_reply id=%s", req.id)
            if journalled and self._journal is not None:
                self._journal.done_async(req.id)
            done()

    async def drain(self, grace_s: float) -> None:
        """Stop admitting; wait up to ``grace_s`` for requests in flight, then end them."""
        self.closing = True
        tasks = list(self._tasks.values())
        if tasks:
            log.info("event=draining in_flight=%d grace_s=%.1f", len(tasks), grace_s)
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        if self._journal is not None:
            await self._journal.close()  # every done record on disk


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` that runs at most once: a PUBACK sent early (journalled) is never sent again
    when the request ends, when the broker may have given its packet id to a new message."""
    called = False

    def run() -> None:
        nonlocal called
        if not called:
            called = True
            fn()

    return run


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
