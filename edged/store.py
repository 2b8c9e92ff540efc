"""Crash-safe storage for edged's small state: answered ids, spool state, the energy counter.

Two shapes, one on-disk line format:

- :class:`RecordLog`: an append-only file of records, one per line, bounded in size whatever
  the settings (at most ``2 * keep`` lines, ``keep`` at least 1). Appends and compaction are
  serialised by one lock (callers run them on executor threads). Compaction writes the newest
  ``keep`` records under a unique temporary name, fsyncs it and renames it over the old file.
- :class:`StateDoc`: one small JSON object, replaced atomically the same way.

Every line is ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``. Reading is tolerant: a line
that is not valid UTF-8, holds NULs, fails its checksum or is not JSON is skipped and counted
in ``damaged``, never raised. A damaged file is rewritten clean before the next append (and
if that rewrite fails, the next record is written after a newline of its own), so a torn or
NUL-filled tail can never swallow the record written after it.

Files written before this format are read too: a line without a checksum is handed to the
``legacy`` parser (plain JSON by default), so an upgrade keeps its state. A legacy line has no
checksum, so a legacy line that lacks its newline (cut short) is counted as damaged.

What this does not do: share a file between processes (one process owns each file), or undo
damage to bytes that were already fsynced (that is what the checksums detect).

All methods block on the disk: call them off the event loop (``run_in_executor``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import tempfile
import threading
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("edged.store")

#: A legacy line parser: ``(True, value)`` for a line it accepts, else ``(False, None)``.
Legacy = Callable[[bytes], tuple[bool, Any]]

#: A state document larger than this is damage (they are a few hundred bytes).
MAX_STATE_BYTES = 1 << 20


def encode_line(obj: Any) -> bytes:
    """One checksummed line (newline included) for a JSON-serialisable value.

    Raises TypeError or ValueError for a value JSON cannot encode (NaN and infinity included).
    """
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def json_legacy(line: bytes) -> tuple[bool, Any]:
    """The default legacy parser: a plain JSON line (the format before checksums)."""
    return _loads(line)


def decode_line(line: bytes, legacy: Legacy | None = json_legacy) -> tuple[bool, Any]:
    """``(True, value)`` for an intact line (with or without its newline), else ``(False, None)``.

    A line in the checksummed format must match its checksum. Any other line goes to
    ``legacy`` (plain JSON by default; None accepts no legacy line). Never raises.
    """
    ok, value, _ = _decode(line, legacy)
    return ok, value


def decode_checked(line: bytes, legacy: Legacy | None = json_legacy) -> tuple[bool, Any, bool]:
    """As :func:`decode_line`, plus whether the line was checksummed: ``(ok, value,
    checked)``; ``checked`` is False for a legacy line (nothing proves it intact)."""
    return _decode(line, legacy)


def _decode(line: bytes, legacy: Legacy | None) -> tuple[bool, Any, bool]:
    """``(ok, value, checked)``; ``checked`` is True for a line whose checksum held."""
    line = line.rstrip(b"\n")
    if not line or b"\x00" in line:
        return False, None, False
    head, sep, body = line.partition(b" ")
    if sep and len(head) == 8 and all(c in b"0123456789abcdef" for c in head):
        if zlib.crc32(body) != int(head, 16):
            return False, None, False
        ok, value = _loads(body)
        return ok, value, ok
    if legacy is None:
        return False, None, False
    try:
        ok, value = legacy(line)
    except Exception:  # a legacy parser must not make reading raise
        return False, None, False
    return ok, value, False


def _loads(body: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a unique temporary file beside it, fsync, rename, fsync
    of the directory. Two writers never share a temporary name. Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename or a new file in it survives a power cut (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Delete temporary files a killed writer of ``path`` left behind (call it only while no
    writer of ``path`` runs: under the owner's lock)."""
    pattern = os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")
    for p in glob.glob(pattern):
        with contextlib.suppress(OSError):
            os.unlink(p)


class RecordLog:
    """Append-only checksummed records, at most ``2 * keep`` lines on disk (compacted to the
    newest ``keep``). Thread-safe: one lock serialises loads, appends and compaction.

    ``damaged`` counts the lines the last :meth:`load` skipped; ``damaged_total`` every line
    skipped by this object. The newest ``keep`` records are also kept in memory, so
    compaction never re-reads the file.
    """

    def __init__(self, path: Path, keep: int, *, legacy: Legacy | None = json_legacy) -> None:
        self.path = Path(path)
        self._keep = max(1, keep)
        self._legacy = legacy
        self.damaged = 0
        self.damaged_total = 0
        self._values: deque[Any] = deque(maxlen=self._keep)
        self._lines = 0  # lines on disk now
        self._clean = True  # the file is exactly the encoded lines we know of
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def keep(self) -> int:
        """How many records are kept (at least 1)."""
        return self._keep

    @keep.setter
    def keep(self, keep: int) -> None:
        with self._lock:
            self._keep = max(1, keep)
            self._values = deque(self._values, maxlen=self._keep)

    def load(self) -> list[Any]:
        """Read every intact record, oldest first (the newest ``keep``). Damaged lines are
        skipped and counted in ``damaged``; a damaged file is rewritten clean. Never raises
        (an unreadable file reads as empty, logged)."""
        with self._lock:
            return self._load()

    def _load(self) -> list[Any]:
        self._loaded = True
        remove_stale_temps(self.path)
        self.damaged = 0
        self._values.clear()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._lines, self._clean = 0, True
            return []
        except OSError as e:
            log.warning("event=store_unreadable path=%s error=%r", self.path, str(e))
            self._lines, self._clean = 0, False
            return []
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        damaged = 0
        for line in lines:
            if not line:
                continue
            ok, value, _ = _decode(line, self._legacy)
            if ok:
                self._values.append(value)
            else:
                damaged += 1
        if tail:
            # no newline: cut short, unless its checksum proves it whole
            ok, value, checked = _decode(tail, self._legacy)
            if ok and checked:
                self._values.append(value)
            else:
                damaged += 1
        self.damaged = damaged
        self.damaged_total += damaged
        values = list(self._values)
        # the file is clean when it is exactly our encoded lines, nothing more
        self._clean = raw == b"".join(encode_line(v) for v in values)
        self._lines = len(values) if self._clean else len(lines) + (1 if tail else 0)
        if damaged:
            log.warning(
                "event=store_damage_skipped path=%s damaged_lines=%d kept=%d",
                self.path,
                damaged,
                len(values),
            )
        if not self._clean:
            self._rewrite()
        return values

    def append(self, value: Any) -> None:
        """Append one record (fsynced); compacts when the file holds ``2 * keep`` lines.
        Raises OSError (the record is then kept in memory and written by the next
        compaction), TypeError or ValueError (a value JSON cannot encode)."""
        line = encode_line(value)
        with self._lock:
            if not self._loaded:
                self._load()
            if not self._clean:
                self._rewrite()
            if not self._clean:
                line = b"\n" + line  # never merge with a damaged tail (a blank line is skipped)
            self._values.append(value)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            try:
                with open(self.path, "ab") as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                self._clean = False  # part of the line may be on disk
                raise
            if created:
                fsync_dir(self.path.parent)
            self._lines += 1
            if self._lines >= 2 * self._keep:
                self._rewrite()

    def _rewrite(self) -> None:
        """Replace the file with the records in memory; on failure, logged, the file stays as
        it is and is marked not clean."""
        values = list(self._values)
        try:
            atomic_write(self.path, b"".join(encode_line(v) for v in values))
        except OSError as e:
            log.warning("event=store_rewrite_failed path=%s error=%r", self.path, str(e))
            self._clean = False
            return
        self._lines = len(values)
        self._clean = True


class StateDoc:
    """One small JSON object, replaced atomically, with a checksum. Thread-safe."""

    def __init__(self, path: Path, *, legacy: Legacy | None = json_legacy) -> None:
        self.path = Path(path)
        self.damage: str | None = None  # why the last read found nothing usable
        self._legacy = legacy
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any] | None:
        """The stored object; None when there is none (``damage`` then says why when the file
        exists but is unusable). Never raises."""
        with self._lock:
            self.damage = None
            remove_stale_temps(self.path)
            try:
                with open(self.path, "rb") as f:
                    raw = f.read(MAX_STATE_BYTES + 1)
            except FileNotFoundError:
                return None
            except OSError as e:
                self.damage = f"unreadable: {e}"
                log.warning("event=state_unreadable path=%s error=%r", self.path, str(e))
                return None
            body = raw[:-1] if raw.endswith(b"\n") else raw
            ok, value = False, None
            if len(raw) <= MAX_STATE_BYTES and b"\n" not in body:
                ok, value = decode_line(body, self._legacy)
            if not ok or not isinstance(value, dict):
                self.damage = "damaged (checksum, encoding, size or JSON)"
                log.warning("event=state_damaged path=%s bytes=%d", self.path, len(raw))
                return None
            return value

    def write(self, value: dict[str, Any]) -> None:
        """Replace the stored object (unique temporary, fsync, rename). Raises OSError, or
        TypeError/ValueError for a value JSON cannot encode."""
        data = encode_line(value)
        with self._lock:
            atomic_write(self.path, data)
