"""A bounded on-disk FIFO of JSON records: telemetry waits here while the broker is away.

Layout under ``path``::

    seg-00000001.jsonl   one checksummed JSON record per line, oldest segment first
    seg-00000002.jsonl   the active segment: appended to, rotated at ``segment_bytes``
    state.json           {"acked_seq", "last_seq", "dropped", "next_index"} (a StateDoc)
    state.backup.json    the same, written just after state.json

Each record gets a ``seq`` at append, one more than the last (it survives restarts), so
whoever receives a record twice can tell. Appends only ever add a line at the end of the
active segment; a process that dies mid-write leaves at most one torn last line, which
reading skips (and counts in ``corrupt``). A new process never appends to an old segment:
it starts a new one, so a torn tail can never swallow the next record.

Integrity: every line carries a CRC-32 of its JSON (:func:`edged.store.encode_line`). A
line that fails it (a changed digit, a bad sector, garbage, NULs) is skipped and counted in
``corrupt``; a segment with no intact record left is deleted at start. Lines of the format
before checksums (plain JSON) are still read, but nothing proves them intact, so one whose
``seq`` does not fit between its neighbours' is skipped as corrupt too: a changed digit can
never make replay skip the intact records after it.

Sequence numbers never go back. At start the next ``seq`` is one more than the largest of
``last_seq`` in either state copy and the ``seq`` of every intact record in every segment.
The two state copies are written one after the other, each atomically, so damage to one
loses nothing. If a state file exists but neither copy is intact, the last number is
unknown (after a full drain the segments are gone): numbering then resumes at the wall clock
in milliseconds (when that is higher), which is above any number this spool can have used
unless the clock is wrong (a board without a real-time clock that booted in 1970). A
consumer then sees a gap, never a reused number; the event is logged as
``spool_state_damaged``.

Delivery is at-least-once: :meth:`Spool.replay` yields what is not yet committed, oldest
first, and only :meth:`Spool.commit` forgets records (deleting segments that are wholly
committed and recording ``acked_seq`` in ``state.json``). A crash between the two replays
the same records again.

The bound is ``max_bytes`` on disk: before a record would pass it, the oldest segments are
deleted, and the records they held that were not committed are added to ``dropped``
(persisted). A full or read-only disk never raises: :meth:`Spool.append` returns False,
counts ``failed_writes`` and logs once per episode; the caller keeps serving and raises the
alarm.

All file I/O goes through aiofiles (worker threads), so the event loop never blocks on the
disk. A Spool belongs to one event loop and is not safe to share between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
from aiofiles.threadpool.binary import AsyncFileIO

from edged.store import StateDoc, decode_checked, encode_line

log = logging.getLogger("edged.telemetry")

SEGMENT_BYTES = 1 << 20
STATE_FILE = "state.json"
STATE_BACKUP = "state.backup.json"
#: how far ahead an unchecked (legacy) line's neighbour is looked for
_LOOKAHEAD = 16
_SEGMENT_RE = re.compile(r"^seg-(\d{8,})\.jsonl$")
_READ_CHUNK = 64 * 1024


@dataclass(eq=False)
class _Segment:
    index: int
    path: Path
    size: int = 0  # bytes on disk that are whole lines (plus a torn tail found at open)
    count: int = 0  # readable records in it
    first_seq: int = 0  # 0: none yet
    last_seq: int = 0
    acked: int = 0  # records in it with seq <= acked_seq
    gone: bool = False  # deleted (committed or dropped); a running replay skips the rest
    skip: set[int] = field(default_factory=set)  # offsets of intact lines out of order

    def ack_upto(self, seq: int) -> None:
        if self.count == 0 or seq < self.first_seq:
            return
        if seq >= self.last_seq:
            self.acked = self.count
        else:
            # seqs within a segment are consecutive unless a line was corrupt; clamp
            self.acked = max(self.acked, min(self.count, seq - self.first_seq + 1))


def _encode(record: Mapping[str, Any]) -> bytes:
    """One checksummed line, newline included."""
    return encode_line(record)


def _decode(line: bytes) -> tuple[dict[str, Any] | None, bool]:
    """``(record, checked)``: a stored record (None for a line that is torn, damaged or not
    ours), and whether its checksum proved it intact (False for the old plain format)."""
    ok, rec, checked = decode_checked(line)
    if not ok or not isinstance(rec, dict):
        return None, False
    seq = rec.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq <= 0:
        return None, False
    return rec, checked


class Spool:
    """A bounded, crash-safe, on-disk FIFO of JSON records (see the module docstring).

    ``segment_bytes`` defaults to 1 MiB, or a quarter of ``max_bytes`` when that is smaller,
    so that dropping the oldest segment never throws away most of the spool.
    """

    def __init__(self, path: Path, max_bytes: int, *, segment_bytes: int | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(1024, min(SEGMENT_BYTES, max_bytes // 4))
        self.failed_writes = 0
        self.corrupt = 0
        self._dropped = 0
        self._acked_seq = 0
        self._next_seq = 1
        self._next_index = 1
        self._segments: list[_Segment] = []
        self._active: AsyncFileIO | None = None
        self._active_seg: _Segment | None = None
        self._lock = asyncio.Lock()
        self._opened = False
        self._failing = False
        self._state_failing = False
        self._replaying = False
        self._replayed_seq = 0
        self._state = StateDoc(self.path / STATE_FILE)
        self._backup = StateDoc(self.path / STATE_BACKUP)
        self._state_next_index = 0

    # --- numbers ---------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records deleted to keep the bound (or too large to store) before being committed;
        cumulative across restarts."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Records stored and not yet committed."""
        return sum(s.count - s.acked for s in self._segments)

    @property
    def pending_bytes(self) -> int:
        """Bytes the spool holds on disk (segments only)."""
        return sum(s.size for s in self._segments)

    @property
    def last_seq(self) -> int:
        """The seq of the newest record ever appended (0: none)."""
        return self._next_seq - 1

    @property
    def acked_seq(self) -> int:
        """Every record with a seq up to this one is committed."""
        return self._acked_seq

    # --- opening ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Recover the state from the files. Idempotent; every other method calls it."""
        if self._opened:
            return
        async with self._lock:
            if self._opened:
                return
            try:
                await self._recover()
            finally:
                # only now: until the recovery is done, ``pending`` would read 0 (and the
                # outbox would publish live ahead of the backlog)
                self._opened = True

    async def _recover(self) -> None:
        """Read the segments and the state file (open() holds the lock)."""
        try:
            await aiofiles.os.makedirs(self.path, exist_ok=True)
            names = await aiofiles.os.listdir(self.path)
        except OSError as e:
            # appends will fail (and be counted) until the directory can be written
            log.error("event=spool_open_failed path=%s error=%r", self.path, str(e))
            return
        last_seq, repair, lost = await self._read_state()
        found: list[_Segment] = []
        for name in names:
            m = _SEGMENT_RE.match(name)
            if m is not None:
                found.append(_Segment(int(m.group(1)), self.path / name))
        found.sort(key=lambda s: s.index)
        scanned: list[tuple[_Segment, list[tuple[int, int, bool]]]] = []
        for seg in found:
            try:
                scanned.append((seg, await self._scan(seg)))
            except OSError as e:
                log.error("event=spool_segment_unreadable path=%s error=%r", seg.path, str(e))
        self._count_in_order(scanned)
        for seg, _ in scanned:
            last_seq = max(last_seq, seg.last_seq)
            if seg.count == seg.acked:  # empty, wholly committed or all corrupt
                await self._remove(seg)
            else:
                self._segments.append(seg)
        if lost:
            floor = int(time.time() * 1000)
            log.error(
                "event=spool_state_damaged path=%s last_seq_found=%d resume_at=%d",
                self.path,
                last_seq,
                max(last_seq + 1, floor),
            )
            last_seq = max(last_seq, floor - 1)
        self._next_seq = last_seq + 1
        self._next_index = max(self._state_next_index, found[-1].index + 1 if found else 1)
        if repair:
            await self._save_state()  # rewrite the damaged copy (and the high-water mark)
        if self._segments or self.corrupt:
            log.info(
                "event=spool_recovered path=%s pending=%d bytes=%d next_seq=%d dropped=%d "
                "corrupt=%d",
                self.path,
                self.pending,
                self.pending_bytes,
                self._next_seq,
                self._dropped,
                self.corrupt,
            )

    async def _read_state(self) -> tuple[int, bool, bool]:
        """Load both state copies (the newest values of each field win); returns ``(last
        seq, repair, lost)``: ``repair`` when a copy exists but is damaged, ``lost`` when
        no copy is intact although one exists (the high-water mark is unknown)."""
        loop = asyncio.get_running_loop()
        last = acked = dropped = index = 0
        intact = damaged = 0
        for doc in (self._state, self._backup):
            state = await loop.run_in_executor(None, doc.read)
            if state is None:
                if doc.damage is not None:
                    damaged += 1
                    log.error(
                        "event=spool_state_unreadable path=%s reason=%r", doc.path, doc.damage
                    )
                continue
            try:
                values = [
                    int(state.get(k, 0)) for k in ("acked_seq", "last_seq", "dropped", "next_index")
                ]
            except (ValueError, TypeError, OverflowError) as e:
                damaged += 1
                log.error("event=spool_state_unreadable path=%s reason=%r", doc.path, str(e))
                continue
            intact += 1
            acked = max(acked, values[0])
            last = max(last, values[1])
            dropped = max(dropped, values[2])
            index = max(index, values[3])
        self._acked_seq = acked
        self._dropped = dropped
        self._state_next_index = index
        return max(last, acked), damaged > 0, damaged > 0 and intact == 0

    async def _scan(self, seg: _Segment) -> list[tuple[int, int, bool]]:
        """Read one segment: ``(offset, seq, checked)`` of each record line; lines that are
        torn or damaged are counted in ``corrupt``."""
        async with aiofiles.open(seg.path, "rb") as f:
            data = await f.read()
        seg.size = len(data)
        lines = data.split(b"\n")
        if lines.pop():  # no newline at the end: a write the process did not finish
            self.corrupt += 1
            log.warning("event=spool_torn_line path=%s", seg.path)
        out: list[tuple[int, int, bool]] = []
        offset = 0
        damaged = 0
        for line in lines:
            rec, checked = _decode(line)
            if rec is None:
                damaged += 1
            else:
                out.append((offset, int(rec["seq"]), checked))
            offset += len(line) + 1
        if damaged:
            self.corrupt += damaged
            log.warning("event=spool_corrupt_lines path=%s lines=%d", seg.path, damaged)
        return out

    def _count_in_order(self, scanned: list[tuple[_Segment, list[tuple[int, int, bool]]]]) -> None:
        """Accept the records whose seq rises, oldest segment first: a record at or below
        the one before it, or an unchecked (old-format) one at or above the next record that
        fits, is skipped (``skip``) and counted in ``corrupt``."""
        flat = [(seg, off, seq, ok) for seg, entries in scanned for off, seq, ok in entries]
        prev = 0
        for k, (seg, off, seq, checked) in enumerate(flat):
            nxt = next((e[2] for e in flat[k + 1 : k + 1 + _LOOKAHEAD] if e[2] > prev), None)
            if seq <= prev or (not checked and nxt is not None and seq >= nxt):
                seg.skip.add(off)
                self.corrupt += 1
                log.warning("event=spool_record_out_of_order path=%s seq=%d", seg.path, seq)
                continue
            prev = seq
            seg.count += 1
            if not seg.first_seq:
                seg.first_seq = seq
            seg.last_seq = seq
            if seq <= self._acked_seq:
                seg.acked += 1

    # --- appending -------------------------------------------------------------------------------

    async def append(self, record: Mapping[str, Any]) -> bool:
        """Store ``record`` (with ``seq`` set, replacing any of its own) at the end.

        Returns False when it could not be stored: the disk refused (``failed_writes``) or
        the record alone is larger than the bound (``dropped``). Never raises OSError; a
        record JSON cannot encode (NaN included) raises TypeError or ValueError.
        """
        await self.open()
        async with self._lock:
            seq = self._next_seq
            body = {k: v for k, v in record.items() if k != "seq"}
            line = _encode({"seq": seq, **body})
            if len(line) > self.max_bytes:
                self._dropped += 1
                log.warning("event=spool_record_too_large bytes=%d", len(line))
                await self._save_state()
                return False
            if self.pending_bytes + len(line) > self.max_bytes:
                await self._make_room(len(line))
            seg: _Segment | None = None
            try:
                seg = await self._writable_segment()
                await self._write_all(line)
            except OSError as e:
                await self._write_failed(seg, e)
                return False
            seg.size += len(line)
            seg.count += 1
            if not seg.first_seq:
                seg.first_seq = seq
            seg.last_seq = seq
            self._next_seq = seq + 1
            if self._failing:
                self._failing = False
                log.info("event=spool_write_recovered path=%s", self.path)
            if seg.size >= self.segment_bytes:
                await self._close_active(sync=True)
            return True

    async def _writable_segment(self) -> _Segment:
        if self._active is not None and self._active_seg is not None:
            return self._active_seg
        seg = _Segment(self._next_index, self.path / f"seg-{self._next_index:08d}.jsonl")
        await aiofiles.os.makedirs(self.path, exist_ok=True)  # it may have been removed
        self._active = await aiofiles.open(seg.path, "ab", buffering=0)
        self._next_index += 1
        self._active_seg = seg
        self._segments.append(seg)
        return seg

    async def _write_all(self, data: bytes) -> None:
        assert self._active is not None
        view = memoryview(data)
        while view:
            n = await self._active.write(view)
            if not n:
                raise OSError("short write")
            view = view[n:]

    async def _write_failed(self, seg: _Segment | None, e: OSError) -> None:
        self.failed_writes += 1
        if not self._failing:
            self._failing = True
            log.error(
                "event=spool_write_failed path=%s error=%r failed_writes=%d",
                self.path,
                str(e),
                self.failed_writes,
            )
        if seg is None:
            return
        if self._active is not None:
            # cut off whatever part of the line did reach the file
            with contextlib.suppress(OSError, ValueError):
                await self._active.truncate(seg.size)
        await self._close_active(sync=False)
        if seg.count == 0:
            await self._remove(seg)
            with contextlib.suppress(ValueError):
                self._segments.remove(seg)

    async def _close_active(self, *, sync: bool) -> None:
        f, self._active, self._active_seg = self._active, None, None
        if f is None:
            return
        try:
            if sync:
                await asyncio.get_running_loop().run_in_executor(None, os.fsync, f.fileno())
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                await f.close()

    async def _make_room(self, need: int) -> None:
        """Delete the oldest segments until ``need`` more bytes fit under the bound."""
        lost = 0
        while self._segments and self.pending_bytes + need > self.max_bytes:
            seg = self._segments.pop(0)
            if seg is self._active_seg:
                await self._close_active(sync=False)
            lost += seg.count - seg.acked
            await self._remove(seg)
        self._dropped += lost
        log.warning(
            "event=spool_dropped records=%d dropped=%d bytes=%d max_bytes=%d",
            lost,
            self._dropped,
            self.pending_bytes,
            self.max_bytes,
        )
        await self._save_state()

    async def _remove(self, seg: _Segment) -> None:
        seg.gone = True
        try:
            await aiofiles.os.remove(seg.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error("event=spool_remove_failed path=%s error=%r", seg.path, str(e))

    async def _save_state(self) -> bool:
        """Replace both state copies (each: unique temporary, fsync, rename); False, logged
        once per episode, when the disk refuses."""
        state = {
            "acked_seq": self._acked_seq,
            "last_seq": self.last_seq,
            "dropped": self._dropped,
            "next_index": self._next_index,
        }
        loop = asyncio.get_running_loop()
        try:
            for doc in (self._state, self._backup):  # one after the other: one is always whole
                await loop.run_in_executor(None, doc.write, state)
        except OSError as e:
            if not self._state_failing:
                self._state_failing = True
                log.error("event=spool_state_write_failed path=%s error=%r", self.path, str(e))
            return False
        self._state_failing = False
        return True

    # --- replaying and committing ----------------------------------------------------------------

    async def replay(self) -> AsyncGenerator[dict[str, Any], None]:
        """Yield every record not yet committed, oldest first, each with its ``seq``.

        Records appended while the replay runs are yielded too, after the older ones; the
        iteration ends when it has caught up. Nothing is forgotten until :meth:`commit`.
        One replay at a time.
        """
        await self.open()
        if self._replaying:
            raise RuntimeError("a replay is already in progress")
        self._replaying = True
        pos = self._acked_seq
        self._replayed_seq = pos
        cur: _Segment | None = None
        offset = 0  # in ``cur``: just past the last whole line consumed
        try:
            while True:
                seg = next((s for s in self._segments if s.last_seq > pos), None)
                if seg is None:
                    return
                if seg is not cur:
                    cur, offset = seg, 0
                before = (pos, offset)
                try:
                    async with aiofiles.open(seg.path, "rb") as f:
                        await f.seek(offset)
                        read_at = offset
                        buf = b""
                        while not seg.gone and read_at < seg.size:
                            chunk = await f.read(min(_READ_CHUNK, seg.size - read_at))
                            if not chunk:
                                break
                            read_at += len(chunk)
                            buf += chunk
                            *lines, buf = buf.split(b"\n")
                            for line in lines:
                                start = offset
                                offset += len(line) + 1
                                rec = None if start in seg.skip else _decode(line)[0]
                                if rec is None or rec["seq"] <= pos:
                                    continue
                                pos = self._replayed_seq = int(rec["seq"])
                                yield rec
                                if seg.gone:
                                    break
                except FileNotFoundError:
                    seg.gone = True
                if (pos, offset) == before and not seg.gone and seg.last_seq > pos:
                    # the file holds less than we counted (changed behind our back): skip it
                    # rather than spin
                    log.error("event=spool_segment_short path=%s", seg.path)
                    pos = self._replayed_seq = seg.last_seq
        finally:
            self._replaying = False

    async def commit(self, seq: int | None = None) -> None:
        """Forget every record up to ``seq`` (default: the last one replayed).

        Wholly committed segments are deleted; ``acked_seq`` goes to ``state.json`` first,
        so a crash in between replays nothing twice. Never raises OSError.
        """
        await self.open()
        upto = self._replayed_seq if seq is None else min(seq, self.last_seq)
        async with self._lock:
            if upto <= self._acked_seq:
                return
            self._acked_seq = upto
            for s in self._segments:
                s.ack_upto(upto)
            saved = await self._save_state()
            done = [s for s in self._segments if s.count == s.acked]
            if not saved and done and done[-1] is self._segments[-1]:
                # without state.json the newest segment is what tells a restart the last seq
                # (a reused seq would be taken for a duplicate): keep it, replay it again
                done.pop()
            for s in done:
                if s is self._active_seg:
                    await self._close_active(sync=False)
                await self._remove(s)
            self._segments = [s for s in self._segments if not s.gone]

    async def close(self) -> None:
        """Flush and close the active segment (appending again reopens a new one)."""
        async with self._lock:
            await self._close_active(sync=True)
