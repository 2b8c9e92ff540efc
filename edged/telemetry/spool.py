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

The FIFO is here; segment naming, the line codec and the reading back at start (segments,
both state copies, the next ``seq``) are in :mod:`edged.telemetry.spool_files`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
from aiofiles.threadpool.binary import AsyncFileIO

from edged.store import StateDoc, encode_line
from edged.telemetry.spool_files import (
    STATE_BACKUP,
    STATE_FILE,
    Segment,
    decode,
    recover,
    remove_segment,
    segment_name,
)

log = logging.getLogger("edged.telemetry")

SEGMENT_BYTES = 1 << 20
_READ_CHUNK = 64 * 1024


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
        self._segments: list[Segment] = []
        self._active: AsyncFileIO | None = None
        self._active_seg: Segment | None = None
        self._lock = asyncio.Lock()
        self._opened = False
        self._failing = False
        self._state_failing = False
        self._replaying = False
        self._replayed_seq = 0
        self._state = StateDoc(self.path / STATE_FILE)
        self._backup = StateDoc(self.path / STATE_BACKUP)

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
        """Take over what the files say (open() holds the lock)."""
        found = await recover(self.path, self._state, self._backup)
        self._segments = found.segments
        self._next_seq = found.next_seq
        self._next_index = found.next_index
        self._acked_seq = found.acked_seq
        self._dropped = found.dropped
        self.corrupt += found.corrupt
        if found.repair:
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
            line = encode_line({"seq": seq, **body})
            if len(line) > self.max_bytes:
                self._dropped += 1
                log.warning("event=spool_record_too_large bytes=%d", len(line))
                await self._save_state()
                return False
            if self.pending_bytes + len(line) > self.max_bytes:
                await self._make_room(len(line))
            seg: Segment | None = None
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

    async def _writable_segment(self) -> Segment:
        if self._active is not None and self._active_seg is not None:
            return self._active_seg
        seg = Segment(self._next_index, self.path / segment_name(self._next_index))
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

    async def _write_failed(self, seg: Segment | None, e: OSError) -> None:
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
            await remove_segment(seg)
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
            await remove_segment(seg)
        self._dropped += lost
        log.warning(
            "event=spool_dropped records=%d dropped=%d bytes=%d max_bytes=%d",
            lost,
            self._dropped,
            self.pending_bytes,
            self.max_bytes,
        )
        await self._save_state()

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
        cur: Segment | None = None
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
                                rec = None if start in seg.skip else decode(line)[0]
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
                await remove_segment(s)
            self._segments = [s for s in self._segments if not s.gone]

    async def close(self) -> None:
        """Flush and close the active segment (appending again reopens a new one)."""
        async with self._lock:
            await self._close_active(sync=True)
