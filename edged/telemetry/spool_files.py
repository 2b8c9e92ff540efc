"""The files under a :class:`~edged.telemetry.spool.Spool`'s directory, and reading them back.

The layout, and what the spool promises about it (sequence numbers that never go back,
checksummed lines, the two state copies), are in :mod:`edged.telemetry.spool`'s docstring.
This module holds the parts of it that a running spool and its start-up share: segment
naming, the :class:`Segment` record a spool keeps per segment, the line codec, and
:func:`recover`, which reads the segments and both state copies at start.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from edged.store import StateDoc, decode_checked

log = logging.getLogger("edged.telemetry")

STATE_FILE = "state.json"
STATE_BACKUP = "state.backup.json"
#: how far ahead an unchecked (legacy) line's neighbour is looked for
_LOOKAHEAD = 16
_SEGMENT_RE = re.compile(r"^seg-(\d{8,})\.jsonl$")

#: ``(offset, seq, checked)`` of one record line in a segment
_Entry = tuple[int, int, bool]


def segment_name(index: int) -> str:
    """The file name of segment number ``index``."""
    return f"seg-{index:08d}.jsonl"


@dataclass(eq=False)
class Segment:
    """One segment file, as the spool counts it."""

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
        """Count the records up to ``seq`` as committed."""
        if self.count == 0 or seq < self.first_seq:
            return
        if seq >= self.last_seq:
            self.acked = self.count
        else:
            # seqs within a segment are consecutive unless a line was corrupt; clamp
            self.acked = max(self.acked, min(self.count, seq - self.first_seq + 1))


def decode(line: bytes) -> tuple[dict[str, Any] | None, bool]:
    """``(record, checked)``: a stored record (None for a line that is torn, damaged or not
    ours), and whether its checksum proved it intact (False for the old plain format)."""
    ok, rec, checked = decode_checked(line)
    if not ok or not isinstance(rec, dict):
        return None, False
    seq = rec.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq <= 0:
        return None, False
    return rec, checked


async def remove_segment(seg: Segment) -> None:
    """Delete a segment's file (marking it ``gone``); a failure is logged, never raised."""
    seg.gone = True
    try:
        await aiofiles.os.remove(seg.path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.error("event=spool_remove_failed path=%s error=%r", seg.path, str(e))


@dataclass
class Recovered:
    """What the files said at start (see :func:`recover`)."""

    #: the segments holding records not yet committed, oldest first
    segments: list[Segment] = field(default_factory=list)
    next_seq: int = 1
    next_index: int = 1
    acked_seq: int = 0
    dropped: int = 0
    #: lines skipped as torn, damaged or out of order
    corrupt: int = 0
    #: a state copy exists but is damaged: write both again
    repair: bool = False


async def recover(path: Path, state: StateDoc, backup: StateDoc) -> Recovered:
    """Read the segments and both state copies under ``path``.

    Segments with nothing left to replay (empty, wholly committed or all corrupt) are
    deleted. Never raises OSError: a directory that cannot be read gives an empty spool
    (its appends will fail, and be counted, until it can be written).
    """
    out = Recovered()
    try:
        await aiofiles.os.makedirs(path, exist_ok=True)
        names = await aiofiles.os.listdir(path)
    except OSError as e:
        log.error("event=spool_open_failed path=%s error=%r", path, str(e))
        return out
    last_seq, lost, state_index = await _read_state(out, (state, backup))
    found: list[Segment] = []
    for name in names:
        m = _SEGMENT_RE.match(name)
        if m is not None:
            found.append(Segment(int(m.group(1)), path / name))
    found.sort(key=lambda s: s.index)
    scanned: list[tuple[Segment, list[_Entry]]] = []
    for seg in found:
        try:
            scanned.append((seg, await _scan(seg, out)))
        except OSError as e:
            log.error("event=spool_segment_unreadable path=%s error=%r", seg.path, str(e))
    _count_in_order(scanned, out)
    for seg, _ in scanned:
        last_seq = max(last_seq, seg.last_seq)
        if seg.count == seg.acked:  # empty, wholly committed or all corrupt
            await remove_segment(seg)
        else:
            out.segments.append(seg)
    if lost:
        floor = int(time.time() * 1000)
        log.error(
            "event=spool_state_damaged path=%s last_seq_found=%d resume_at=%d",
            path,
            last_seq,
            max(last_seq + 1, floor),
        )
        last_seq = max(last_seq, floor - 1)
    out.next_seq = last_seq + 1
    out.next_index = max(state_index, found[-1].index + 1 if found else 1)
    return out


async def _read_state(out: Recovered, docs: tuple[StateDoc, ...]) -> tuple[int, bool, int]:
    """Load the state copies (the newest values of each field win) into ``out``; returns
    ``(last seq, lost, next index)``: ``lost`` when no copy is intact although one exists
    (the high-water mark is unknown). ``out.repair`` is set when a copy is damaged."""
    loop = asyncio.get_running_loop()
    last = acked = dropped = index = 0
    intact = damaged = 0
    for doc in docs:
        state = await loop.run_in_executor(None, doc.read)
        if state is None:
            if doc.damage is not None:
                damaged += 1
                log.error("event=spool_state_unreadable path=%s reason=%r", doc.path, doc.damage)
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
    out.acked_seq = acked
    out.dropped = dropped
    out.repair = damaged > 0
    return max(last, acked), damaged > 0 and intact == 0, index


async def _scan(seg: Segment, out: Recovered) -> list[_Entry]:
    """Read one segment: ``(offset, seq, checked)`` of each record line; lines that are
    torn or damaged are counted in ``out.corrupt``."""
    async with aiofiles.open(seg.path, "rb") as f:
        data = await f.read()
    seg.size = len(data)
    lines = data.split(b"\n")
    if lines.pop():  # no newline at the end: a write the process did not finish
        out.corrupt += 1
        log.warning("event=spool_torn_line path=%s", seg.path)
    entries: list[_Entry] = []
    offset = 0
    damaged = 0
    for line in lines:
        rec, checked = decode(line)
        if rec is None:
            damaged += 1
        else:
            entries.append((offset, int(rec["seq"]), checked))
        offset += len(line) + 1
    if damaged:
        out.corrupt += damaged
        log.warning("event=spool_corrupt_lines path=%s lines=%d", seg.path, damaged)
    return entries


def _count_in_order(scanned: list[tuple[Segment, list[_Entry]]], out: Recovered) -> None:
    """Accept the records whose seq rises, oldest segment first: a record at or below
    the one before it, or an unchecked (old-format) one at or above the next record that
    fits, is skipped (``skip``) and counted in ``out.corrupt``."""
    flat = [(seg, off, seq, ok) for seg, entries in scanned for off, seq, ok in entries]
    prev = 0
    for k, (seg, off, seq, checked) in enumerate(flat):
        nxt = next((e[2] for e in flat[k + 1 : k + 1 + _LOOKAHEAD] if e[2] > prev), None)
        if seq <= prev or (not checked and nxt is not None and seq >= nxt):
            seg.skip.add(off)
            out.corrupt += 1
            log.warning("event=spool_record_out_of_order path=%s seq=%d", seg.path, seq)
            continue
        prev = seq
        seg.count += 1
        if not seg.first_seq:
            seg.first_seq = seq
        seg.last_seq = seq
        if seq <= out.acked_seq:
            seg.acked += 1
