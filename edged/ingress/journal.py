"""The in-flight journal: admitted requests that have no final reply yet, on disk.

edged acknowledges a QoS 1 request to the broker as soon as it is recorded here (or refused),
not when its final reply is out, so the broker's flow control (Receive Maximum) never waits
on how long a request takes. The journal keeps the promise the late acknowledgement used to
keep: a request in flight when edged dies is found here at the next start and served once.

Each admitted request is one ``admit`` record holding what serving it again needs (the
validated request and its reply address: topic and Correlation Data, with wall-clock
receive time and deadline); its end is one ``done`` record. Records are lines of a
:class:`edged.store.RecordLog` (checksummed, fsynced, damaged lines skipped and counted).

Bound: the file is compacted (rewritten with only the live ``admit`` records: unique
temporary name, fsync, rename) whenever it is larger than ``compact_bytes`` and than twice
the live records, so it stays under ``max(compact_bytes, 2 * live bytes)`` plus one record;
live records are at most ``ingress.queue_limit`` requests of at most
``ingress.max_payload_bytes`` each. The RecordLog also holds the file's records in memory;
compaction (which reloads it from the new file) bounds that the same way.

Every write runs on one worker thread, in submission order, so an ``admit`` always reaches
the disk before its ``done``. Methods named ``*_async`` are called on the event loop; the
rest block on the disk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.store import RecordLog, atomic_write, encode_line
from edged.types import (
    ChatMessage,
    ReplyAddress,
    Request,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

log = logging.getLogger("edged.journal")

#: Compact once the file is larger than this (and than twice its live records), bytes.
COMPACT_BYTES = 256 * 1024
#: RecordLog's own line bound; the journal compacts long before it is reached.
_LINES_KEPT = 1_000_000


@dataclass(frozen=True, slots=True)
class Entry:
    """A journalled request found at start: it had no final reply when edged stopped.

    ``received_unix_s`` and ``deadline_unix_s`` are wall-clock (the monotonic clock does not
    survive a restart); :meth:`request` turns them back into monotonic instants.
    """

    record: dict[str, Any]
    received_unix_s: float
    deadline_unix_s: float | None

    @property
    def id(self) -> str:
        """The request id."""
        return str(self.record["id"])

    def request(self, now_s: float | None = None, now_unix_s: float | None = None) -> Request:
        """The request to serve again, with its deadline (and receive time) on the monotonic
        clock of this process."""
        now_s = time.monotonic() if now_s is None else now_s
        now_unix_s = time.time() if now_unix_s is None else now_unix_s
        return request_from_record(self.record, now_s, now_unix_s)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes | None:
    return None if text is None else base64.b64decode(str(text), validate=True)


def request_record(req: Request, now_s: float, now_unix_s: float) -> dict[str, Any]:
    """The ``admit`` record of ``req``; ``now_s`` (monotonic) and ``now_unix_s`` (wall clock)
    are the same instant, to carry its receive time and deadline across a restart."""

    def unix(mono: float) -> float:
        return round(now_unix_s + (mono - now_s), 3)

    return {
        "op": "admit",
        "id": req.id,
        "reply": {"topic": req.reply.topic, "correlation_b64": _b64(req.reply.correlation_data)},
        "messages": [_message_record(m) for m in req.messages],
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "stream": req.stream,
        "route": req.route,
        "sensitivity": req.sensitivity,
        "policy": req.policy,
        **({"conversation": req.conversation} if req.conversation is not None else {}),
        **({"device_tools": list(req.device_tools)} if req.device_tools else {}),
        "received_unix_s": unix(req.received_at_s),
        "deadline_unix_s": None if req.deadline_at_s is None else unix(req.deadline_at_s),
        **_tool_fields(req),
    }


def _message_record(m: ChatMessage) -> list[Any]:
    """``[role, content]``, plus a third item with the tool fields when the turn has any."""
    if not m.tool_calls and m.tool_call_id is None:
        return [m.role, m.content]
    extra: dict[str, Any] = {"tool_calls": [[c.id, c.name, c.arguments] for c in m.tool_calls]}
    if m.tool_call_id is not None:
        extra["tool_call_id"] = m.tool_call_id
    return [m.role, m.content, extra]


def _message_from(item: list[Any]) -> ChatMessage:
    role, content, *rest = item
    if len(rest) > 1:
        raise ValueError("a message record has at most three items")
    if role not in ("system", "user", "assistant", "tool"):
        raise ValueError(f"unknown role {role!r}")
    extra: dict[str, Any] = rest[0] if rest else {}
    calls = tuple(ToolCall(str(i), str(n), str(a)) for i, n, a in extra.get("tool_calls", ()))
    call_id = extra.get("tool_call_id")
    return ChatMessage(role, str(content), calls, None if call_id is None else str(call_id))


def _tool_fields(req: Request) -> dict[str, Any]:
    """The tool-calling fields of a record; none when the request has none (so records stay
    what they were for plain requests)."""
    out: dict[str, Any] = {}
    if req.tools:
        out["tools"] = [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in req.tools
        ]
    if req.tool_choice is not None:
        out["tool_choice"] = {"mode": req.tool_choice.mode, "name": req.tool_choice.name}
    f = req.response_format
    if f is not None:
        out["response_format"] = {
            "type": f.type,
            "name": f.name,
            "schema": f.schema,
            "strict": f.strict,
        }
    return out


def _tools_from(rec: dict[str, Any]) -> dict[str, Any]:
    """Request keyword arguments from :func:`_tool_fields` (absent in older records)."""
    tools = tuple(
        ToolSpec(str(t["name"]), str(t["description"]), dict(t["parameters"]))
        for t in rec.get("tools") or ()
    )
    choice = rec.get("tool_choice")
    if choice is not None and choice["mode"] not in ("auto", "none", "required", "function"):
        raise ValueError(f"unknown tool_choice mode {choice['mode']!r}")
    if (choice is None) != (not tools):
        raise ValueError("tool_choice is recorded exactly when tools are")
    fmt = rec.get("response_format")
    if fmt is not None and fmt["type"] not in ("text", "json_object", "json_schema"):
        raise ValueError(f"unknown response_format type {fmt['type']!r}")
    return {
        "tools": tools,
        "tool_choice": None if choice is None else ToolChoice(choice["mode"], choice.get("name")),
        "response_format": None
        if fmt is None
        else ResponseFormat(
            fmt["type"],
            fmt.get("name"),
            None if fmt.get("schema") is None else dict(fmt["schema"]),
            bool(fmt.get("strict", True)),
        ),
    }


def request_from_record(rec: dict[str, Any], now_s: float, now_unix_s: float) -> Request:
    """The inverse of :func:`request_record`. Raises KeyError/TypeError/ValueError on a
    record of the wrong shape."""

    def mono(unix_s: float) -> float:
        return now_s + (float(unix_s) - now_unix_s)

    reply = rec["reply"]
    deadline = rec.get("deadline_unix_s")
    return Request(
        id=str(rec["id"]),
        messages=tuple(_message_from(m) for m in rec["messages"]),
        max_tokens=int(rec["max_tokens"]),
        temperature=float(rec["temperature"]),
        stream=bool(rec["stream"]),
        route=rec["route"],
        sensitivity=rec["sensitivity"],
        reply=ReplyAddress(str(reply["topic"]), _unb64(reply.get("correlation_b64"))),
        received_at_s=mono(rec["received_unix_s"]),
        deadline_at_s=None if deadline is None else mono(deadline),
        policy=rec.get("policy"),
        conversation=rec.get("conversation"),
        device_tools=tuple(str(n) for n in rec.get("device_tools", ())),
        **_tools_from(rec),
    )


class Journal:
    """Admitted requests without a final reply, durable across a crash (see module doc)."""

    def __init__(self, path: Path, compact_bytes: int = COMPACT_BYTES) -> None:
        self.path = path
        self._compact_bytes = compact_bytes
        # no legacy format: a line without a checksum is damage
        self._log = RecordLog(path, keep=_LINES_KEPT, legacy=None)
        self._live: dict[str, bytes] = {}  # id -> its admit line (as on disk), writer thread
        self._size = 0  # bytes on disk now, writer thread
        self._executor: ThreadPoolExecutor | None = None
        #: writes that failed (disk full, unwritable): those requests were acknowledged only
        #: after their final reply, as before the journal
        self.failed_writes = 0
        #: damaged lines skipped by :meth:`load`
        self.damaged = 0
        self.compactions = 0

    # --- start (blocking) --------------------------------------------------------------------

    def load(self) -> list[Entry]:
        """The requests journalled and not done, oldest first; afterwards the file holds only
        them. Damaged or malformed records are skipped, counted and logged; never raises."""
        live: dict[str, dict[str, Any]] = {}
        values = self._log.load()
        bad = self._log.damaged
        for v in values:
            if not isinstance(v, dict) or not isinstance(v.get("id"), str):
                bad += 1
                continue
            if v.get("op") == "admit":
                try:
                    request_from_record(v, 0.0, 0.0)  # the shape is usable
                except (KeyError, TypeError, ValueError, AttributeError):
                    bad += 1
                    continue
                live[v["id"]] = v
            elif v.get("op") == "done":
                live.pop(v["id"], None)
            else:
                bad += 1
        self.damaged = bad
        if bad:
            log.warning("event=journal_damage_skipped path=%s records=%d", self.path, bad)
        self._live = {rid: encode_line(rec) for rid, rec in live.items()}
        try:
            self._compact()
        except OSError as e:
            self.failed_writes += 1
            log.warning("event=journal_write_failed op=compact error=%r", str(e))
        return [
            Entry(rec, float(rec["received_unix_s"]), _float_or_none(rec.get("deadline_unix_s")))
            for rec in live.values()
        ]

    # --- writes (blocking, on the writer thread) ---------------------------------------------

    def admit(self, record: dict[str, Any]) -> None:
        """Record an admitted request (fsynced before it returns). Raises OSError; the
        record may then still reach the disk (the RecordLog keeps it for its next rewrite),
        so it counts as live either way and its ``done`` is written too."""
        line = encode_line(record)
        try:
            self._log.append(record)
        finally:
            self._live[str(record["id"])] = line
            self._size += len(line)
        self._maybe_compact()

    def done(self, request_id: str) -> None:
        """Record that a request has had its final reply. Raises OSError."""
        if self._live.pop(request_id, None) is None:
            return  # never journalled, or already done
        record = {"op": "done", "id": request_id}
        self._log.append(record)
        self._size += len(encode_line(record))
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        live_bytes = sum(len(v) for v in self._live.values())
        if self._size > self._compact_bytes and self._size > 2 * live_bytes:
            self._compact()

    def _compact(self) -> None:
        data = b"".join(self._live.values())
        atomic_write(self.path, data)
        # the log's own records in memory, line count and clean state, from the new file
        self._log.load()
        self._size = len(data)
        self.compactions += 1

    # --- the event loop side -----------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        return self._executor

    def admit_async(self, record: dict[str, Any]) -> asyncio.Future[None]:
        """Queue :meth:`admit` on the writer thread; the future fails with OSError when the
        record could not be written."""
        return asyncio.get_running_loop().run_in_executor(self._pool(), self.admit, record)

    def done_async(self, request_id: str) -> None:
        """Queue :meth:`done` on the writer thread (after every write queued before it); a
        failure is logged and counted."""
        fut = asyncio.get_running_loop().run_in_executor(self._pool(), self.done, request_id)
        fut.add_done_callback(self._log_failure)

    def _log_failure(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            return
        err = fut.exception()
        if err is not None:
            self.failed_writes += 1
            log.warning("event=journal_write_failed op=done error=%r", str(err))

    async def close(self) -> None:
        """Wait until every queued write is on disk, then stop the writer thread."""
        ex, self._executor = self._executor, None
        if ex is not None:
            with contextlib.suppress(RuntimeError):
                await asyncio.get_running_loop().run_in_executor(None, ex.shutdown, True)

    @property
    def live(self) -> int:
        """Requests journalled and not done (as the writer thread last saw them)."""
        return len(self._live)


def _float_or_none(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]
