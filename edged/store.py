"""Crash-safe storage for edged's small state: answered ids, spool state, the energy counter.

Two shapes, one on-disk line format:

- :class:`RecordLog`: an append-only file of records, one per line, bounded in size whatever
  the settings. Appends are serialised by a lock (callers run them on executor threads), and
  the file is compacted by writing a new one under a unique temporary name, fsyncing it and
  renaming it over the old one.
- :class:`StateDoc`: one small JSON document, replaced atomically the same way.

Every line is ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``. Reading is tolerant: a line
that is not valid UTF-8, holds NULs, is cut short (no newline), fails its checksum or is not
JSON is skipped and counted in ``damaged``, never raised. A damaged file is rewritten clean
before the next append, so a torn tail can never swallow the record written after it.

Files written before this format (plain JSON lines) are read too: a line that is plain JSON is
accepted as ``legacy`` (it has no checksum to check), so an upgrade keeps its state.

All methods block on the disk: call them off the event loop (``run_in_executor``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any

log = logging.getLogger("edged.store")


def encode_line(obj: Any) -> bytes:
    """One checksummed line for a JSON-serialisable value."""
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_line(line: bytes) -> tuple[bool, Any]:
    """``(True, value)`` for an intact line (with or without its newline), else ``(False, None)``.

    A plain JSON line (the format before checksums) is accepted as it is.
    """
    line = line.rstrip(b"\n")
    if not line or b"\x00" in line:
        return False, None
    head, sep, body = line.partition(b" ")
    if sep and len(head) == 8:
        try:
            crc = int(head, 16)
        except ValueError:
            crc = -1
        if crc >= 0:
            if zlib.crc32(body) != crc:
                return False, None
            return _loads(body)
    return _loads(line)  # legacy: no checksum


def _loads(body: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
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
    """fsync a directory so a rename in it survives a power cut (best effort)."""
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
    """Delete temporary files a killed writer of ``path`` left behind."""
    with contextlib.suppress(OSError):
        for p in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()


class RecordLog:
    """Append-only checksummed records, at most ``2 * keep`` lines on disk (compacted to the
    newest ``keep``). Thread-safe: one lock serialises appends and compaction."""

    def __init__(self, path: Path, keep: int) -> None:
        self.path = path
        self.keep = max(1, keep)
        self.damaged = 0  # lines skipped by the last load
        self._lines = 0  # lines on disk now
        self._clean = True  # the file ends with a whole line
        self._lock = threading.Lock()

    def load(self) -> list[Any]:
        """Read every intact record, oldest first (the newest ``keep``). Damaged lines are
        skipped and counted in ``damaged``; a damaged file is rewritten clean. Never raises
        (an unreadable file reads as empty, logged)."""
        with self._lock:
            remove_stale_temps(self.path)
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                self._lines, self._clean, self.damaged = 0, True, 0
                return []
            except OSError as e:
                log.warning("event=store_unreadable path=%s error=%r", self.path, str(e))
                self._lines, self._clean, self.damaged = 0, False, 0
                return []
            values: list[Any] = []
            damaged = 0
            for line in raw.split(b"\n"):
                if not line:
                    continue
                ok, value = decode_line(line)
                if ok:
                    values.append(value)
                else:
                    damaged += 1
            self.damaged = damaged
            values = values[-self.keep :]
            self._lines = len(values)
            # rewrite unless every line was intact and the file ends with a newline (a last
            # line whose checksum holds but lacks its newline is kept: its record is whole)
            self._clean = damaged == 0 and raw.endswith(b"\n") and len(values) == raw.count(b"\n")
            if damaged:
                log.warning(
                    "event=store_damage_skipped path=%s damaged_lines=%d kept=%d",
                    self.path,
                    damaged,
                    len(values),
                )
            if not self._clean:
                self._rewrite(values)
            return values

    def append(self, value: Any) -> None:
        """Append one record (fsynced); compacts when the file holds ``2 * keep`` lines.
        Raises OSError."""
        line = encode_line(value)
        with self._lock:
            if not self._clean:
                self._rewrite(self._read_intact())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._lines += 1
            if self._lines >= 2 * self.keep:
                self._rewrite(self._read_intact())

    def _read_intact(self) -> list[Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        values = []
        for line in raw.split(b"\n"):
            ok, value = decode_line(line)
            if ok:
                values.append(value)
        return values[-self.keep :]

    def _rewrite(self, values: list[Any]) -> None:
        try:
            atomic_write(self.path, b"".join(encode_line(v) for v in values))
        except OSError as e:
            log.warning("event=store_rewrite_failed path=%s error=%r", self.path, str(e))
            self._clean = False
            return
        self._lines = len(values)
        self._clean = True


class StateDoc:
    """One small JSON object, replaced atomically, with a checksum."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damage: str | None = None  # why the last read found nothing usable
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any] | None:
        """The stored object; None when there is none (``damage`` says why when the file
        exists but is unusable). Never raises."""
        self.damage = None
        remove_stale_temps(self.path)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self.damage = f"unreadable: {e}"
            return None
        ok, value = decode_line(raw.strip(b"\n") if raw.count(b"\n") <= 1 else b"")
        if not ok or not isinstance(value, dict):
            self.damage = "damaged (checksum, encoding or JSON)"
            log.warning("event=state_damaged path=%s bytes=%d", self.path, len(raw))
            return None
        return value

    def write(self, value: dict[str, Any]) -> None:
        """Replace the stored object (unique temporary, fsync, rename). Raises OSError."""
        with self._lock:
            atomic_write(self.path, encode_line(value))
